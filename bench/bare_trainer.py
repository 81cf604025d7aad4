"""The baseline the flow is measured against: the course chapter's plain Trainer script.

Reads MRPC's train and validation TSVs (and test.tsv where the folder holds one), tokenizes
with dynamic padding, fine-tunes with the seed recipe (lr 5e-5, batch 8, 3 epochs, evaluation
per epoch, transformers' defaults for everything else) and writes validation and test
accuracy and F1 as JSON. No Prefect, no MLflow, no cache, no model kept.

Which epoch it reports (`--select-epoch`):

- `best` (the default): the epoch the flow would keep, chosen the way tasks/train.py
  chooses it: a checkpoint saved every epoch, `load_best_model_at_end` with
  `metric_for_best_model` = validation F1 of label 1 (the flow's `objective_metric` `auto`
  on MRPC; `--objective-metric` changes it), greater is better, the first epoch on a tie.
- `last`: the last epoch, with nothing saved (what this script did before 2026-12-06).

Validation figures are those of the chosen epoch; test figures are `trainer.predict` on the
test split with the chosen weights, with the same definitions as the flow's metric module
(accuracy = share of exact matches, F1 = scikit-learn's binary `f1_score` of label 1).
`--group-by-length` and `--bf16` are the speed-ups `bench.training_speed` measures against it.

    .venv/bin/python -m bench.bare_trainer --data-dir DIR --model DIR --result r.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)


def split(data_dir: Path, name: str, limit: int | None, tokenizer) -> Dataset:
    frame = pd.read_csv(data_dir / f"{name}.tsv", sep="\t", quoting=3).head(limit)
    dataset = Dataset.from_pandas(frame[["sentence1", "sentence2", "label"]])
    return dataset.map(
        lambda batch: tokenizer(batch["sentence1"], batch["sentence2"], truncation=True),
        batched=True,
    )


def metrics(prediction) -> dict:
    predicted = np.argmax(prediction.predictions, axis=-1)
    return {
        "accuracy": accuracy_score(prediction.label_ids, predicted),
        "f1": f1_score(prediction.label_ids, predicted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--group-by-length", action="store_true", help="length-grouped batches")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument(
        "--select-epoch", choices=("best", "last"), default="best", help="see the module's doc"
    )
    parser.add_argument(
        "--objective-metric", choices=("f1", "accuracy"), default="f1", help="for `best`"
    )
    parser.add_argument("--result", type=Path, required=True, help="where the JSON goes")
    args = parser.parse_args()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = split(args.data_dir, "train", args.max_train_samples, tokenizer)
    validation = split(args.data_dir, "validation", args.max_eval_samples, tokenizer)
    has_test = (args.data_dir / "test.tsv").exists()
    test = split(args.data_dir, "test", None, tokenizer) if has_test else None
    best = args.select_epoch == "best"
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    with tempfile.TemporaryDirectory() as output:
        training = TrainingArguments(
            output,
            learning_rate=5e-5,
            per_device_train_batch_size=8,
            num_train_epochs=args.num_epochs,
            eval_strategy="epoch",
            save_strategy="epoch" if best else "no",
            save_total_limit=1 if best else None,
            save_only_model=True,
            load_best_model_at_end=best,
            metric_for_best_model=args.objective_metric if best else None,
            greater_is_better=True if best else None,
            seed=args.seed,
            use_cpu=not torch.cuda.is_available(),
            bf16=args.bf16,
            train_sampling_strategy="group_by_length" if args.group_by_length else "random",
            report_to="none",
        )
        trainer = Trainer(
            model=model,
            args=training,
            train_dataset=train,
            eval_dataset=validation,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=metrics,
        )
        output = trainer.train()
        final = trainer.evaluate()
        held_out = trainer.predict(test, metric_key_prefix="test").metrics if has_test else {}
    epochs = [row for row in trainer.state.log_history if "eval_f1" in row]
    chosen = epochs[-1]
    if best:
        key = f"eval_{args.objective_metric}"
        chosen = next(row for row in epochs if row[key] == trainer.state.best_metric)
    result = {
        "seconds_in_script": time.perf_counter() - start,
        "train_samples_per_second": output.metrics["train_samples_per_second"],
        "select_epoch": args.select_epoch,
        "objective_metric": args.objective_metric if best else None,
        "chosen_epoch": round(chosen["epoch"]),
        "validation_accuracy": final["eval_accuracy"],
        "validation_f1": final["eval_f1"],
        **{key: held_out[key] for key in ("test_accuracy", "test_f1") if key in held_out},
    }
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
