"""TrainingArguments follow the config; the same seed gives the same training."""

from pathlib import Path

import pytest
import torch
from oracles import native_bf16

import tasks.train
from tasks import machine_recipe
from tasks.config import PACKAGED_MODEL, ConfigError, FineTuneConfig
from tasks.data import load_data
from tasks.machine_recipe import use_bf16
from tasks.model import load_model, resolve_model
from tasks.objective import resolve_objective
from tasks.tokenization import load_tokenizer, tokenize
from tasks.train import few_rows_warning, train, training_arguments


def test_arguments_carry_the_recipe(tmp_path):
    config = FineTuneConfig(learning_rate=3e-5, batch_size=4, num_epochs=2, warmup_ratio=0.1)
    config = resolve_objective(config, ["0", "1"])  # as train() resolves it on the data
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


def test_native_bf16_is_what_the_hardware_says():
    assert machine_recipe.native_bf16() is native_bf16()  # /proc/cpuinfo, the GPU's capability


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_bf16_setting(monkeypatch, native):
    monkeypatch.setattr(machine_recipe, "native_bf16", lambda: native)
    assert use_bf16("off") is False
    assert use_bf16("auto") is (torch.cuda.is_available() and native)  # fp32 on every CPU
    if native:
        assert use_bf16("on") is True
    else:
        with pytest.raises(ConfigError, match="would be emulated"):
            use_bf16("on")


def test_a_small_train_split_gets_advice_at_run_start():
    advice = few_rows_warning(999, 32)
    assert advice is not None and "999 rows (32 step(s) an epoch at batch 32)" in advice
    assert "raise --num-epochs or lower --batch-size" in advice
    assert few_rows_warning(1000, 32) is None


def train_on_a_slice(config: FineTuneConfig, folder: Path, times: int = 1):
    model_path = resolve_model(PACKAGED_MODEL)
    data = load_data(config)
    tokenizer = load_tokenizer(model_path)
    datasets = tokenize(data, tokenizer, config.max_length, folder / "cache").datasets
    return [
        train(config, model_path, tokenizer, datasets, data.label_names, folder / f"out{i}")
        for i in range(times)
    ]


@pytest.mark.slow
def test_same_seed_same_training(mrpc_dir, tmp_path: Path):
    config = FineTuneConfig(
        data_dir=mrpc_dir, max_train_samples=16, max_eval_samples=8, num_epochs=1
    )
    runs = train_on_a_slice(config, tmp_path, times=2)
    losses = [[row.get("eval_loss") for row in run.history if "eval_loss" in row] for run in runs]
    assert losses[0] == losses[1] and losses[0]


@pytest.mark.slow
def test_frozen_layers_keep_their_weights_and_the_rest_learns(mrpc_dir, tmp_path: Path):
    config = FineTuneConfig(
        data_dir=mrpc_dir, max_train_samples=16, max_eval_samples=8, num_epochs=1,
        batch_size=8, freeze_layers=2, bf16="off",
    )  # fmt: skip
    (run,) = train_on_a_slice(config, tmp_path)
    loaded = load_model(resolve_model(PACKAGED_MODEL), ["no", "yes"]).state_dict()
    trained = run.trainer.model.state_dict()
    unchanged = {name for name, weights in trained.items() if weights.equal(loaded[name])}
    assert run.frozen_layers == 2
    dense = "bert.encoder.layer.{}.output.dense.weight"
    assert {"bert.embeddings.word_embeddings.weight", dense.format(1)} <= unchanged
    assert not {dense.format(2), dense.format(5), "classifier.weight"} & unchanged


@pytest.mark.slow
@pytest.mark.parametrize("cached", [True, False])
def test_training_steps_start_above_the_frozen_layers(mrpc_dir, tmp_path, monkeypatch, cached):
    """With their outputs kept, the frozen layers run only in eval mode (the one pass before
    training, and each evaluation); training steps run the layers above them."""
    modes: dict[int, list[bool]] = {0: [], 2: []}

    def observed(model_path, label_names):
        model = load_model(model_path, label_names)
        for index, calls in modes.items():
            model.bert.encoder.layer[index].register_forward_hook(
                lambda module, args, output, calls=calls: calls.append(module.training)
            )
        return model

    monkeypatch.setattr(tasks.train, "load_model", observed)
    config = FineTuneConfig(
        data_dir=mrpc_dir, max_train_samples=16, max_eval_samples=8, num_epochs=1,
        batch_size=8, freeze_layers=2, bf16="off", cache_frozen_features=cached,
    )  # fmt: skip
    (run,) = train_on_a_slice(config, tmp_path)
    assert run.frozen_features_cached is cached
    assert modes[2].count(True) == 2  # two steps of 8 rows
    assert modes[0].count(True) == (0 if cached else 2)
