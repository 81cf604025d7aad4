from pathlib import Path

import pytest

from flows.cli import build_config, parser
from tasks.config import ConfigError, FineTuneConfig, validated


def test_defaults_are_the_seed_recipe_with_four_times_the_batch():
    config = FineTuneConfig()
    assert config.learning_rate == 1e-4  # the seed's 5e-5, scaled by sqrt(32 / 8)
    assert config.batch_size == 32
    assert config.num_epochs == 3
    assert config.weight_decay == 0.0
    assert config.seed == 42
    assert config.max_length > 0
    assert config.freeze_layers == "auto"
    assert FineTuneConfig(freeze_layers="2").freeze_layers == 2  # from a command line


@pytest.mark.parametrize(
    ("setting", "value", "field"),
    [
        ("learning_rate", 0, "learning_rate"),
        ("learning_rate", -1e-5, "learning_rate"),
        ("num_epochs", 0, "num_epochs"),
        ("batch_size", 0, "batch_size"),
        ("max_length", -3, "max_length"),
        ("bf16", "maybe", "bf16"),
        ("freeze_layers", -1, "freeze_layers"),
        ("freeze_layers", "some", "freeze_layers"),
        ("freeze_layers", 1.5, "freeze_layers"),
        ("no_such_setting", 1, "no_such_setting"),
    ],
)
def test_invalid_values_fail_with_the_setting_named(setting, value, field):
    with pytest.raises(ConfigError, match=field):
        validated(FineTuneConfig, {setting: value})


def test_yaml_then_overrides(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 2.0e-5\nnum_epochs: 2\nlabel_names: a,b\n")
    args = parser().parse_args(["fine-tune", "--config", str(path), "--num-epochs", "4"])
    config = build_config(args, FineTuneConfig)
    assert config.learning_rate == 2e-5
    assert config.num_epochs == 4
    assert config.label_names == ["a", "b"]


def test_missing_config_file_is_reported(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(
            parser().parse_args(["fine-tune", "--config", str(tmp_path / "x.yaml")]), FineTuneConfig
        )


def test_pair_column_none_means_single_sentence():
    config = FineTuneConfig(text_pair_column="none")
    assert config.text_pair_column is None
    assert not config.pair_column_is_default
    assert FineTuneConfig().pair_column_is_default
