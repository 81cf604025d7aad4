"""Batch prediction with a logged or registered model: label and probability per row."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.data_files import read_table
from tasks.errors import DataError, NoModelError
from tasks.registry import CHAMPION

log = logging.getLogger(__name__)


def model_uri(
    client: MlflowClient, name: str, version: str | None, runtime: str = "torch"
) -> tuple[str, str]:
    """URI and version of the requested version, or of the champion; with `runtime="onnx"`
    the URI of that version's ONNX export, if it passed its parity check."""
    try:
        found = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, CHAMPION)
        )
    except MlflowException:
        wanted = f"version {version}" if version else f"'{CHAMPION}' alias"
        raise NoModelError(
            f"registered model {name!r} has no {wanted} (or does not exist); "
            "train one with the fine-tune, search or retrain flow"
        ) from None
    if runtime == "onnx":
        uri = onnx_export_uri(client, found.run_id, f"{name} v{found.version}")
    else:
        uri = f"models:/{name}/{found.version}"
    return uri, str(found.version)


def onnx_export_uri(client: MlflowClient, run_id: str, described: str) -> str:
    """The ONNX export logged by the run that produced a model version; refused when there is
    none or when its labels did not match the full model's (`tasks.onnx_export.passes`)."""
    run = client.get_run(run_id)
    tags, metrics = run.data.tags, run.data.metrics
    uri = tags.get("finetrack.onnx.model_uri")
    if uri is None:
        raise NoModelError(
            f"{described} has no ONNX export; fine-tune with --onnx-export int8 (or fp32)"
        )
    if tags.get("finetrack.onnx.fit_to_serve") != "true":
        raise NoModelError(
            f"{described}: its ONNX export failed the parity check (labels agree on "
            f"{metrics.get('onnx_label_agreement', float('nan')):.2%} of validation rows, "
            f"accuracy drop {metrics.get('onnx_accuracy_drop', float('nan')):.4f}); predict "
            "with --runtime torch"
        )
    return uri


def read_inputs(path: Path, text_column: str, pair_column: str | None) -> pd.DataFrame:
    """The rows to classify; missing columns or empty texts are reported before predicting."""
    if not Path(path).is_file():
        raise DataError(f"input file not found: {path}")
    frame = read_table(Path(path))
    columns = [text_column] + ([pair_column] if pair_column else [])
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; it has {list(frame.columns)}")
    for column in columns:
        if (frame[column].astype(str).str.strip() == "").any():
            raise DataError(f"{path}: empty text in column {column!r}")
    return frame


CHUNK_ROWS = 4096  # rows per call of the model: progress for big files, bounded memory


def predict_frame(
    uri: str, frame: pd.DataFrame, text_column: str, pair_column: str | None, batch_size: int
) -> pd.DataFrame:
    """`frame` with `predicted_label` and `probability` (of that label) added. The model
    batches each chunk itself, in length order (`batch_size` rows a batch)."""
    model = mlflow.pyfunc.load_model(uri)
    inputs = pd.DataFrame({"text": frame[text_column].astype(str)})
    if pair_column:
        inputs["text_pair"] = frame[pair_column].astype(str)
    labels, scores = [], []
    for start in range(0, len(inputs), CHUNK_ROWS):
        chunk = inputs.iloc[start : start + CHUNK_ROWS].reset_index(drop=True)
        output = model.predict(chunk, params={"batch_size": batch_size})
        labels.extend(output["label"].astype(str))
        scores.extend(output["score"].astype(float))
        log.info("predicted %d / %d rows", min(start + CHUNK_ROWS, len(inputs)), len(inputs))
    result = frame.copy()
    result["predicted_label"] = labels
    result["probability"] = [round(score, 6) for score in scores]
    return result
