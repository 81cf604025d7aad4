"""The baseline the flow is measured against: the course chapter's plain Trainer script.

Reads MRPC's train and validation TSVs, tokenizes with dynamic padding, fine-tunes with the
seed recipe (lr 5e-5, batch 8, 3 epochs, evaluation per epoch, transformers' defaults for
everything else) and writes the final validation accuracy and F1 as JSON. No Prefect, no
MLflow, no cache, no model saved. `--group-by-length` and `--bf16` are the speed-ups
`bench.training_speed` measures against it.

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
    parser.add_argument("--result", type=Path, required=True, help="where the JSON goes")
    args = parser.parse_args()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = split(args.data_dir, "train", args.max_train_samples, tokenizer)
    validation = split(args.data_dir, "validation", args.max_eval_samples, tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    with tempfile.TemporaryDirectory() as output:
        training = TrainingArguments(
            output,
            learning_rate=5e-5,
            per_device_train_batch_size=8,
            num_train_epochs=args.num_epochs,
            eval_strategy="epoch",
            save_strategy="no",
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
    result = {
        "seconds_in_script": time.perf_counter() - start,
        "train_samples_per_second": output.metrics["train_samples_per_second"],
        "validation_accuracy": final["eval_accuracy"],
        "validation_f1": final["eval_f1"],
    }
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
