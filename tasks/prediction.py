"""Batch prediction with a logged or registered model: label and probability per row."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.data import DataError, read_table
from tasks.registry import CHAMPION

log = logging.getLogger(__name__)


class NoModelError(LookupError):
    """Raised when the registry has no model (or no champion) to predict with."""


def model_uri(client: MlflowClient, name: str, version: str | None) -> tuple[str, str]:
    """`models:/` URI and version of the requested version, or of the champion."""
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
    return f"models:/{name}/{found.version}", str(found.version)


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
