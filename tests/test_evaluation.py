"""Held-out scoring with the product's own Trainer and TrainingArguments.

The rows are predicted in length order and mapped back; whatever sampler the Trainer would
pick for evaluation (length grouping is on by default), every prediction must land on its
row, and a Trainer that reorders rows must be refused, not recorded.
"""

import numpy as np
import pytest
import torch
from transformers import Trainer

from tasks.config import FineTuneConfig
from tasks.data import load_data
from tasks.evaluation import OrderError, evaluate_split
from tasks.model import resolve_model
from tasks.tokenization import load_tokenizer, tokenize
from tasks.train import train
from tasks.uncertainty import Scoring

SCORING = Scoring(2, positive=1)  # MRPC: F1 of label 1


@pytest.fixture(scope="module")
def trained(mrpc_dir, tmp_path_factory):
    """The product's `train` on a small slice with its default settings."""
    folder = tmp_path_factory.mktemp("evaluation")
    config = FineTuneConfig(
        data_dir=mrpc_dir,
        max_train_samples=32,
        max_eval_samples=40,
        eval_batch_size=16,
        num_epochs=1,
        output_dir=folder / "out",
    )
    assert config.group_by_length  # the default whose eval sampler once shuffled rows
    data = load_data(config)
    model_path = resolve_model(config.model_name_or_path)
    tokenizer = load_tokenizer(model_path)
    tokenized = tokenize(data, tokenizer, config.max_length, folder / "cache").datasets
    result = train(config, model_path, tokenizer, tokenized, data.label_names, folder / "out")
    return data, tokenized, result.trainer


def one_by_one(trainer, dataset) -> np.ndarray:
    """Probability of label 1 for each row, predicted alone: no batch, no sampler."""
    model, collate = trainer.model.eval(), trainer.data_collator
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    columns = [c for c in inputs if c in dataset.features]
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=trainer.args.bf16):
        for row in dataset.select_columns(columns):
            logits = model(**collate([row])).logits.float()
            out.append(torch.softmax(logits, dim=-1)[0, 1].item())
    return np.array(out)


def test_predictions_stay_with_their_rows(trained):
    data, tokenized, trainer = trained
    validation, frame = tokenized["validation"], data.splits["validation"]
    lengths = [len(ids) for ids in validation["input_ids"]]
    assert lengths != sorted(lengths)  # the slice is not already in length order

    result = evaluate_split(trainer, validation, frame, "validation", data.label_names, SCORING)

    assert list(result.predictions["text"]) == list(frame["text"])
    tolerance = 0.03 if trainer.args.bf16 else 1e-4
    np.testing.assert_allclose(
        result.predictions["prob_1"], one_by_one(trainer, validation), atol=tolerance
    )


def test_a_trainer_that_reorders_rows_is_refused(trained):
    data, tokenized, trainer = trained
    plain = Trainer(  # transformers' own Trainer with the product's arguments
        model=trainer.model,
        args=trainer.args,
        eval_dataset=trainer.eval_dataset,
        data_collator=trainer.data_collator,
        processing_class=trainer.processing_class,
    )
    frame = data.splits["validation"]
    with pytest.raises(OrderError, match="validation"):
        evaluate_split(
            plain, tokenized["validation"], frame, "validation", data.label_names, SCORING
        )


def test_unlabelled_split_is_predicted_not_scored(trained):
    data, tokenized, trainer = trained
    frame = data.splits["test"].assign(label=-1)
    dataset = tokenized["test"].map(lambda row: {"label": -1})

    result = evaluate_split(trainer, dataset, frame, "test", data.label_names, SCORING)

    assert result.metrics == {} and result.confusion is None
    assert len(result.predictions) == len(frame)
    assert result.predictions["predicted"].isin(data.label_names).all()
