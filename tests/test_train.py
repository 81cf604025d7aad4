"""TrainingArguments follow the config; the same seed gives the same training."""

from pathlib import Path

import pytest

from tasks.config import PACKAGED_MODEL, FineTuneConfig
from tasks.data import load_data
from tasks.model import resolve_model
from tasks.tokenization import load_tokenizer, tokenize
from tasks.train import train, training_arguments, use_bf16


def test_arguments_carry_the_recipe(tmp_path):
    config = FineTuneConfig(learning_rate=3e-5, batch_size=4, num_epochs=2, warmup_ratio=0.1)
    args = training_arguments(config, tmp_path)
    assert args.learning_rate == 3e-5
    assert args.per_device_train_batch_size == 4
    assert args.num_train_epochs == 2
    assert args.warmup_steps == 0.1
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch"
    assert args.load_best_model_at_end and args.metric_for_best_model == "f1"
    assert args.report_to == [] or args.report_to == "none"
    assert args.seed == 42 and args.optim == "adamw_torch_fused"
    assert args.train_sampling_strategy == "group_by_length"
    random_batches = training_arguments(
        config.model_copy(update={"group_by_length": False}), tmp_path
    )
    assert random_batches.train_sampling_strategy == "random"


def test_bf16_setting():
    assert use_bf16("on") is True
    assert use_bf16("off") is False
    assert isinstance(use_bf16("auto"), bool)


@pytest.mark.slow
def test_same_seed_same_training(mrpc_dir, tmp_path: Path):
    config = FineTuneConfig(
        data_dir=mrpc_dir, max_train_samples=16, max_eval_samples=8, num_epochs=1
    )
    model_path = resolve_model(PACKAGED_MODEL)
    data = load_data(config)
    tokenizer = load_tokenizer(model_path)
    datasets = tokenize(data, tokenizer, config.max_length, tmp_path / "cache").datasets
    runs = [
        train(config, model_path, tokenizer, datasets, data.label_names, tmp_path / f"out{i}")
        for i in range(2)
    ]
    losses = [[row.get("eval_loss") for row in run.history if "eval_loss" in row] for run in runs]
    assert losses[0] == losses[1] and losses[0]
