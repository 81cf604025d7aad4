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
DEFAULT_MODEL_NAME = "finetrack"  # where a search registers its winner unless told


@dataclass(frozen=True)
class Holdout:
    """The labelled rows on which champion and challenger are both scored."""

    frame: pd.DataFrame  # text, optional text_pair, integer label
    label_names: list[str]
    split: str = "validation"


@dataclass(frozen=True)
class PromotionPolicy:
    """How a challenger must compare with the champion to take the alias."""

    metric: str = "f1"
    margin: float = 0.0


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
    split: str = "validation"

    def as_tags(self) -> dict[str, str]:
        return {f"finetrack.promotion.{key}": str(value) for key, value in asdict(self).items()}

    def describe(self) -> str:
        """One paragraph for the model version's description and the logs."""
        verdict = "became champion" if self.promoted else "did not become champion"
        if self.champion_version == self.challenger_version:
            against = "it already was the champion"
        elif self.champion_score is None:
            against = "there was no champion yet"
        else:
            against = f"champion v{self.champion_version} scored {self.champion_score:.4f}" + (
                f", margin {self.margin}" if self.margin else ""
            )
        return (
            f"v{self.challenger_version} scored {self.metric} {self.challenger_score:.4f} on "
            f"the {self.split} rows; {against}: it {verdict}."
        )


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version the `champion` alias points at, or None."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def score_model(model_uri: str, frame: pd.DataFrame, label_names: list[str]) -> dict[str, float]:
    """Accuracy and F1 of a logged model on a labelled frame (text, text_pair, label)."""
    predicted = predict_labels(model_uri, frame, label_names)
    return compute_metrics(predicted, frame["label"].to_numpy(), len(label_names))


def predict_labels(model_uri: str, frame: pd.DataFrame, label_names: list[str]) -> np.ndarray:
    """Label ids a logged model predicts for the frame's rows, in fp32 where it has a choice."""
    model = mlflow.pyfunc.load_model(model_uri)
    columns = [c for c in ("text", "text_pair") if c in frame.columns]
    output = model.predict(frame[columns], params=_fp32_if_supported(model))
    ids = {name: i for i, name in enumerate(label_names)}
    return np.array([ids[str(label)] for label in output["label"]])


def _fp32_if_supported(model) -> dict | None:
    """Champion and challenger are compared in fp32, so the decision and its recorded scores
    do not depend on whether the scoring machine computes bf16 natively. Models logged before
    the precision parameter existed run in fp32 anyway."""
    params = model.metadata.get_params_schema()
    if params is not None and "precision" in {spec.name for spec in params.params}:
        return {"precision": "fp32"}
    return None


def register(client: MlflowClient, model_uri: str, name: str, run_id: str) -> str:
    """A new version of `name` for the logged model; returns the version number."""
    version = mlflow.register_model(model_uri, name, tags={"finetrack.run_id": run_id})
    client.set_model_version_tag(name, version.version, "finetrack.run_id", run_id)
    return str(version.version)


def promote_if_better(
    client: MlflowClient, name: str, version: str, holdout: Holdout, policy: PromotionPolicy
) -> Decision:
    """Score challenger and champion on the holdout; move the alias if the challenger wins."""

    def score(model_version: str) -> float:
        uri = f"models:/{name}/{model_version}"
        return score_model(uri, holdout.frame, holdout.label_names)[policy.metric]

    challenger = score(version)
    current = champion_version(client, name)
    incumbent = score(current) if current is not None and current != version else None
    promoted = incumbent is None or challenger > incumbent + policy.margin
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = Decision(
        name, version, challenger, current, incumbent, policy.metric, policy.margin, promoted,
        holdout.split,
    )  # fmt: skip
    client.update_model_version(name, version, description=decision.describe())
    log.info("%s: %s", name, decision.describe())
    return decision
