"""Configs of the jobs around a fine-tuned model: batch prediction and reproducing a run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.config.checks import require_onnx
from tasks.config.fine_tune import FineTuneConfig


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
