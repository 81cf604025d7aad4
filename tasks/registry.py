"""Model Registry: register a logged model and move the `champion` alias only for a better one.

Champion and challenger are scored by the same code on the same labelled frame, so the
decision never compares numbers measured on different data, and it rests on a paired
bootstrap interval of their difference (with McNemar's exact test beside it), not on the
point difference: on a few hundred rows, two seeds of one recipe differ by more than a row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.config import FineTuneConfig
from tasks.evaluation import compute_metrics
from tasks.uncertainty import PairedComparison, Scoring, compare_paired, difference_text

log = logging.getLogger(__name__)

CHAMPION = "champion"
DEFAULT_MODEL_NAME = "finetrack"  # where a search registers its winner unless told


@dataclass(frozen=True)
class Holdout:
    """The labelled rows on which champion and challenger are both scored."""

    frame: pd.DataFrame  # text, optional text_pair, integer label
    label_names: list[str]
    scoring: Scoring
    split: str = "validation"


@dataclass(frozen=True)
class PromotionPolicy:
    """How a challenger must compare with the champion to take the alias."""

    metric: str = "f1"
    margin: float = 0.0
    confidence: float = 0.95
    test: Literal["bootstrap", "none"] = "bootstrap"

    @classmethod
    def of(cls, config: FineTuneConfig, metric: str | None = None) -> PromotionPolicy:
        """The policy a (resolved) fine-tune config sets; `metric` overrides its objective."""
        return cls(
            metric or config.objective_metric,
            config.promotion_margin,
            config.promotion_confidence,
            config.promotion_test,
        )

    def judge(self, comparison: PairedComparison) -> tuple[bool, str]:
        """Whether the challenger wins, and why, in one sentence."""
        margin = f"the margin {100 * self.margin:g}"
        if self.test == "none":
            promoted = comparison.difference > self.margin
            relation = "above" if promoted else "not above"
            return promoted, (
                f"{'promoted' if promoted else 'not promoted'} on the point difference alone "
                f"(promotion test none): {100 * comparison.difference:+.2f} points, {relation} "
                f"{margin}"
            )
        promoted = comparison.low > self.margin
        if promoted:
            where = f"lies above {margin}"
        elif comparison.high > self.margin:
            where = f"includes {margin}"
        else:
            where = f"lies at or below {margin}"
        verdict = "promoted" if promoted else "not promoted"
        return promoted, f"{verdict}: {comparison.interval_text()} {where}"


@dataclass
class Decision:
    """What a promotion check saw and decided, with the evidence it rests on."""

    model_name: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    metric: str
    margin: float
    promoted: bool
    reason: str
    split: str = "validation"
    test: str = "bootstrap"
    rows: int = 0
    difference: float | None = None  # challenger minus champion, metric units
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    mcnemar_p: float | None = None
    disagreements: int | None = None  # rows exactly one of the two gets right

    def as_tags(self) -> dict[str, str]:
        return {f"finetrack.promotion.{key}": str(value) for key, value in asdict(self).items()}

    def metrics(self) -> dict[str, float]:
        """The decision's numbers, for the challenger's run."""
        names = ("difference", "ci_low", "ci_high", "mcnemar_p", "disagreements", "rows")
        values = {"challenger_score": self.challenger_score, "champion_score": self.champion_score}
        values |= {name: getattr(self, name) for name in names}
        return {f"promotion_{k}": float(v) for k, v in values.items() if v is not None}

    def describe(self) -> str:
        """One paragraph for the model version's description, the run and the logs."""
        scored = (
            f"v{self.challenger_version} scored {self.metric} {self.challenger_score:.4f} on "
            f"{self.rows} {self.split} rows"
        )
        if self.champion_version == self.challenger_version:
            return f"{scored}; it already was the champion."
        if self.champion_score is None:
            return f"{scored}; there was no champion yet: it became champion."
        evidence = (
            f"champion v{self.champion_version} scored {self.champion_score:.4f}; paired "
            f"difference {self.ci_text()}, exact McNemar p = {self.mcnemar_p:.3g} on "
            f"{self.disagreements} rows only one of them gets right"
        )
        return f"{scored}; {evidence}. {self.reason[0].upper()}{self.reason[1:]}."

    def ci_text(self) -> str:
        return difference_text(self.difference, self.ci_low, self.ci_high, self.confidence)

    def markdown(self) -> str:
        """The `retrain-decision` artifact."""
        verdict = "promoted" if self.promoted else "kept the champion"
        champion = (
            f"v{self.champion_version} {self.metric}={self.champion_score:.4f}"
            if self.champion_score is not None
            else "none"
        )
        lines = [
            f"# Retrain: {verdict}",
            "",
            f"- model `{self.model_name}`",
            f"- challenger v{self.challenger_version}: {self.metric}={self.challenger_score:.4f}",
            f"- champion before: {champion}",
            f"- held-out rows: {self.rows} ({self.split})",
            f"- margin: {100 * self.margin:g} points; test: {self.test}",
        ]
        if self.difference is not None:
            lines += [
                f"- difference: {self.ci_text()}",
                f"- exact McNemar p: {self.mcnemar_p:.4g} ({self.disagreements} rows only one "
                "of the two gets right)",
            ]
        return "\n".join([*lines, f"- decision: {self.reason}", ""])


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version the `champion` alias points at, or None."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def predict_labels(model_uri: str, frame: pd.DataFrame, label_names: list[str]) -> np.ndarray:
    """Label ids a logged model predicts for the frame's rows, in fp32 where it has a choice."""
    return timed_labels(model_uri, frame, label_names)[0]


def timed_labels(
    model_uri: str, frame: pd.DataFrame, label_names: list[str]
) -> tuple[np.ndarray, float]:
    """`predict_labels` and the seconds its prediction took (loading the model left out)."""
    model = mlflow.pyfunc.load_model(model_uri)
    columns = [c for c in ("text", "text_pair") if c in frame.columns]
    started = time.perf_counter()
    output = model.predict(frame[columns], params=_fp32_if_supported(model))
    seconds = time.perf_counter() - started
    ids = {name: i for i, name in enumerate(label_names)}
    return np.array([ids[str(label)] for label in output["label"]]), seconds


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
    client: MlflowClient,
    name: str,
    version: str,
    holdout: Holdout,
    policy: PromotionPolicy,
    challenger: np.ndarray | None = None,
    details: str | None = None,
) -> Decision:
    """Score challenger and champion on the same holdout rows; move the alias only when the
    policy's test says the challenger is better (the first model always becomes champion).
    `challenger`: its labels, where the caller scored the logged model on these rows already
    (as `predict_labels` does). `details`: more for the version's description, after the
    decision (an ONNX export's parity and speed-up)."""

    def predicted(model_version: str) -> np.ndarray:
        uri = f"models:/{name}/{model_version}"
        return predict_labels(uri, holdout.frame, holdout.label_names)

    truth = holdout.frame["label"].to_numpy()
    challenger = predicted(version) if challenger is None else challenger
    score = compute_metrics(challenger, truth, holdout.scoring)[policy.metric]
    current = champion_version(client, name)
    common = (name, version, score, current)
    base = {"metric": policy.metric, "margin": policy.margin, "split": holdout.split}
    base |= {"test": policy.test, "rows": len(truth)}
    if current is None or current == version:
        reason = "no champion yet" if current is None else "already the champion"
        decision = Decision(*common, None, promoted=current is None, reason=reason, **base)
    else:
        comparison = compare_paired(
            challenger, predicted(current), truth, holdout.scoring, policy.metric,
            confidence=policy.confidence,
        )  # fmt: skip
        promoted, reason = policy.judge(comparison)
        decision = Decision(
            *common, comparison.champion, promoted=promoted, reason=reason, **base,
            difference=comparison.difference, ci_low=comparison.low, ci_high=comparison.high,
            confidence=comparison.confidence, mcnemar_p=comparison.mcnemar_p,
            disagreements=comparison.disagreements,
        )  # fmt: skip
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    description = "\n\n".join(part for part in (decision.describe(), details) if part)
    client.update_model_version(name, version, description=description)
    log.info("%s: %s", name, decision.describe())
    return decision
