"""Held-out scoring predicts in length order but reports every row where it came from."""

import numpy as np
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

from tasks.config import PACKAGED_MODEL, FineTuneConfig
from tasks.data import load_data
from tasks.evaluation import evaluate_split, softmax
from tasks.model import load_model, resolve_model
from tasks.tokenization import load_tokenizer, tokenize


def test_predictions_stay_with_their_rows(mrpc_dir, tmp_path):
    data = load_data(FineTuneConfig(data_dir=mrpc_dir, max_train_samples=8, max_eval_samples=24))
    model_path = resolve_model(PACKAGED_MODEL)
    tokenizer = load_tokenizer(model_path)
    validation = tokenize(data, tokenizer, 128, tmp_path / "cache").datasets["validation"]
    lengths = [len(ids) for ids in validation["input_ids"]]
    assert lengths != sorted(lengths)  # the slice is not already in length order
    set_seed(0)
    trainer = Trainer(
        model=load_model(model_path, data.label_names),
        args=TrainingArguments(
            str(tmp_path / "out"), per_device_eval_batch_size=4, use_cpu=True, report_to="none"
        ),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    frame = data.splits["validation"]

    result = evaluate_split(trainer, validation, frame, "validation", data.label_names)

    in_file_order = softmax(trainer.predict(validation).predictions.astype(np.float64))
    assert list(result.predictions["text"]) == list(frame["text"])
    np.testing.assert_allclose(result.predictions["prob_1"], in_file_order[:, 1], atol=1e-5)
    expected = [data.label_names[i] for i in in_file_order.argmax(axis=-1)]
    assert list(result.predictions["predicted"]) == expected
