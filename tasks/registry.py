"""Model Registry: register a logged model and move the `champion` alias only for a better one.

Champion and challenger are scored by the same code on the same labelled frame, so the
decision never compares numbers measured on different data.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.evaluation import compute_metrics

log = logging.getLogger(__name__)

CHAMPION = "champion"


@dataclass
class Decision:
    """What a promotion check saw and decided."""

    model_name: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    metric: str
    margin: float
    promoted: bool

    def as_tags(self) -> dict[str, str]:
        return {f"finetrack.promotion.{key}": str(value) for key, value in asdict(self).items()}


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version the `champion` alias points at, or None."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def score_model(model_uri: str, frame: pd.DataFrame, label_names: list[str]) -> dict[str, float]:
    """Accuracy and F1 of a logged model on a labelled frame (text, text_pair, label)."""
    model = mlflow.pyfunc.load_model(model_uri)
    columns = [c for c in ("text", "text_pair") if c in frame.columns]
    output = model.predict(frame[columns])
    ids = {name: i for i, name in enumerate(label_names)}
    predicted = np.array([ids[str(label)] for label in output["label"]])
    return compute_metrics(predicted, frame["label"].to_numpy(), len(label_names))


def register(client: MlflowClient, model_uri: str, name: str, run_id: str) -> str:
    """A new version of `name` for the logged model; returns the version number."""
    version = mlflow.register_model(model_uri, name, tags={"finetrack.run_id": run_id})
    client.set_model_version_tag(name, version.version, "finetrack.run_id", run_id)
    return str(version.version)


def promote_if_better(
    client: MlflowClient,
    name: str,
    version: str,
    frame: pd.DataFrame,
    label_names: list[str],
    metric: str = "f1",
    margin: float = 0.0,
) -> Decision:
    """Score challenger and champion on `frame`; move the alias if the challenger wins."""
    challenger = score_model(f"models:/{name}/{version}", frame, label_names)[metric]
    current = champion_version(client, name)
    incumbent = None
    if current is not None and current != version:
        incumbent = score_model(f"models:/{name}/{current}", frame, label_names)[metric]
    promoted = incumbent is None or challenger > incumbent + margin
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = Decision(name, version, challenger, current, incumbent, metric, margin, promoted)
    log.info(
        "%s v%s %s=%.4f vs champion %s (%s): %s",
        name, version, metric, challenger, current, incumbent,
        "promoted" if promoted else "kept the champion",
    )  # fmt: skip
    return decision
