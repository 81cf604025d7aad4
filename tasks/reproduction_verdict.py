"""The verdict on a reproduction: every number the original run recorded (per-epoch metrics,
held-out metrics, predictions CSVs) against the new run's, within a tolerance fitted to the
precision both ran in (`tasks/reproduce.py` finds the run and checks it before training).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from tasks import tracking
from tasks.reproduce import Checks, Original, prediction_files

VERDICT_TAG = "finetrack.reproduction.verdict"
TOLERANCE_TAG = "finetrack.reproduction.tolerance"
LABELS_CHANGED_TAG = "finetrack.reproduction.labels_changed"
REPORT = "reproduction.json"
EPOCH_METRICS = tuple(tracking.EpochMetricsLogger.NAMES.values())
HELD_OUT = ("validation_", "test_")  # the metrics of the best epoch on the held-out splits
SHOWN_DIFFERENCES = 10  # of each group the text lists the largest; reproduction.json all
PER_EPOCH = "per-epoch values"  # the groups of compared numbers, as a verdict counts them
HELD_OUT_METRICS = "held-out metrics"
PREDICTION_ROWS = "prediction rows"

# How far a reproduction may move a recorded number and still hold, by the precision of the
# two runs (bench/determinism.py, on this project's 2-core AVX512-BF16 CPU, 8 training steps):
# the same thread count gives identical numbers in fp32 and in bf16; fp32 moved probabilities
# by 3e-8 between 1 and 2 threads and by 9e-8 on AVX2 kernels; a bf16 training moved them by
# 3.5e-4 against fp32. The bf16 bound is the one the project holds the same weights to in bf16
# and fp32 (tests/oracles.py: measured gaps up to 0.007 on MRPC slices).
TOLERANCE = {
    "fp32": (
        1e-4,
        "fp32 on both sides: another thread count or CPU's kernels add up in another order "
        "(measured up to 1e-7 in probabilities)",
    ),
    "bf16": (
        0.03,
        "bf16 on one side at least: bf16 keeps 8 bits of mantissa (the same weights in bf16 "
        "and fp32 measured up to 0.007 apart in probabilities)",
    ),
}


@dataclass
class Difference:
    """One recorded number and its reproduction (None: missing on that side)."""

    what: str
    group: str  # per-epoch values or held-out metrics, as `Verdict.compared` counts them
    original: float | None
    reproduction: float | None

    @property
    def size(self) -> float:
        if self.original is None or self.reproduction is None:
            return float("inf")
        return abs(self.reproduction - self.original)

    def text(self) -> str:
        pair = (self.original, self.reproduction)
        shown = " -> ".join("not recorded" if v is None else f"{v:.6g}" for v in pair)
        return f"{self.what}: {shown}" + ("" if None in pair else f" ({self.size:.2g})")


@dataclass
class SplitPredictions:
    """A split's predictions CSV against its reproduction, row by row."""

    split: str
    rows: int
    reproduction_rows: int
    labels_changed: int
    largest_probability_difference: float | None  # None: other rows or classes

    def holds(self, tolerance: float) -> bool:
        """Same rows, same labels, probabilities within `tolerance`."""
        largest = self.largest_probability_difference
        return not self.labels_changed and largest is not None and largest <= tolerance

    def text(self) -> str:
        largest = self.largest_probability_difference
        if largest is None:
            return (
                f"predictions_{self.split}.csv: {self.reproduction_rows} rows against "
                f"{self.rows}, or other classes"
            )
        return (
            f"predictions_{self.split}.csv: {self.labels_changed} of {self.rows} rows' labels "
            f"changed, probabilities within {largest:.2g}"
        )


def compare_predictions(split: str, original: pd.DataFrame, new: pd.DataFrame) -> SplitPredictions:
    """Labels and probabilities of the same rows; other row counts or classes differ outright."""
    columns = [name for name in original.columns if name.startswith("prob_")]
    if len(original) != len(new) or columns != [c for c in new.columns if c.startswith("prob_")]:
        return SplitPredictions(split, len(original), len(new), len(original), None)
    changed = int((original["predicted"].astype(str) != new["predicted"].astype(str)).sum())
    largest = float((original[columns] - new[columns]).abs().to_numpy().max(initial=0.0))
    return SplitPredictions(split, len(original), len(new), changed, largest)


@dataclass
class Verdict:
    """Whether a reproduction's result holds: identical, within tolerance, or differs."""

    original_run_id: str
    reproduction_run_id: str
    outcome: str
    tolerance: float
    reason: str  # why this tolerance
    compared: dict[str, int]
    differences: list[Difference]
    predictions: list[SplitPredictions]
    warnings: list[str]
    changed_settings: dict[str, list]  # setting -> [recorded, reproduction]

    @property
    def exit_code(self) -> int:
        """0 when the result holds, 1 when it differs."""
        return 1 if self.outcome == "differs" else 0

    @property
    def labels_changed(self) -> int:
        return sum(split.labels_changed for split in self.predictions)

    def text(self) -> str:
        """The verdict as printed and put in the run's description."""
        compared = ", ".join(f"{count} {what}" for what, count in self.compared.items())
        head = f"reproduction of run {self.original_run_id} as run {self.reproduction_run_id}: "
        if self.outcome == "identical":
            return f"{head}identical\ncompared: {compared}, every one equal"
        lines = [
            f"{head}{self.outcome} (tolerance {self.tolerance:g}: {self.reason})",
            f"compared: {compared}",
        ]
        lines += [f"- {split.text()}" for split in self.predictions]
        for group in self.compared:
            found = [d for d in self.differences if d.group == group]
            largest = sorted(found, key=lambda d: d.size, reverse=True)[:SHOWN_DIFFERENCES]
            lines += [f"- {difference.text()}" for difference in largest]
            if len(found) > len(largest):
                lines.append(f"- and {len(found) - len(largest)} more {group} ({REPORT})")
        return "\n".join(lines)


def _metric_by_step(client: MlflowClient, run_id: str, name: str) -> dict[int, float]:
    """A metric's value at each step; where a step was logged twice (a retried trial), the
    last value."""
    history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.timestamp)
    return {metric.step: metric.value for metric in history}


def _read_predictions(client: MlflowClient, run_id: str, name: str, folder: str) -> pd.DataFrame:
    path = client.download_artifacts(run_id, name, str(Path(folder) / run_id))
    return pd.read_csv(path, dtype={"predicted": str}, keep_default_na=False)


def compare(
    client: MlflowClient,
    original: Original,
    reproduction_id: str,
    checks: Checks,
    changed_settings: dict[str, list],
) -> Verdict:
    """Every per-epoch metric, held-out metric and predictions CSV the run recorded, against
    the reproduction's (`changed_settings`, from `rebuild_config`, go into the report)."""
    differences: list[Difference] = []
    compared = {PER_EPOCH: 0, HELD_OUT_METRICS: 0, PREDICTION_ROWS: 0}
    for name in EPOCH_METRICS:
        before = _metric_by_step(client, original.run_id, name)
        after = _metric_by_step(client, reproduction_id, name)
        for step, value in sorted(before.items()):
            compared[PER_EPOCH] += 1
            if after.get(step) != value:
                what = f"{name}, epoch {step}"
                differences.append(Difference(what, PER_EPOCH, value, after.get(step)))
    after_metrics = client.get_run(reproduction_id).data.metrics
    for name, value in sorted(original.run.data.metrics.items()):
        if name.startswith(HELD_OUT):
            compared[HELD_OUT_METRICS] += 1
            if after_metrics.get(name) != value:
                differences.append(
                    Difference(name, HELD_OUT_METRICS, value, after_metrics.get(name))
                )
    predictions = []
    reproduced = prediction_files(client, client.get_run(reproduction_id))
    with tempfile.TemporaryDirectory() as folder:
        for split, name in sorted(prediction_files(client, original.run).items()):
            before = _read_predictions(client, original.run_id, name, folder)
            after = before.iloc[0:0]  # no rows: a split the reproduction did not predict
            if split in reproduced:
                after = _read_predictions(client, reproduction_id, name, folder)
            predictions.append(compare_predictions(split, before, after))
            compared[PREDICTION_ROWS] += len(before)
    tolerance, reason = TOLERANCE[checks.precision]
    if not differences and all(split.holds(0.0) for split in predictions):
        outcome = "identical"
    elif all(d.size <= tolerance for d in differences) and all(
        split.holds(tolerance) for split in predictions
    ):
        outcome = "within tolerance"
    else:
        outcome = "differs"
    return Verdict(
        original.run_id, reproduction_id, outcome, tolerance, reason, compared, differences,
        predictions, checks.warnings, changed_settings,
    )  # fmt: skip


def record(client: MlflowClient, original: Original, verdict: Verdict) -> None:
    """The verdict on the reproduction's run (tags, `reproduction.json`, its description,
    which links the original); the original run is only read."""
    run_id = verdict.reproduction_run_id
    for key, value in {
        VERDICT_TAG: verdict.outcome,
        TOLERANCE_TAG: f"{verdict.tolerance:g}",
        LABELS_CHANGED_TAG: str(verdict.labels_changed),
    }.items():
        client.set_tag(run_id, key, value)
    report = asdict(verdict) | {"original_run_name": original.name, "kind": original.kind}
    tracking.log_files(client, run_id, {REPORT: report})
    link = (
        f"[{original.name}](#/experiments/{original.run.info.experiment_id}/runs/{original.run_id})"
    )
    before = client.get_run(run_id).data.tags.get("mlflow.note.content", "")
    text = verdict.text().replace("\n", "\n\n")
    tracking.describe(
        client, run_id, f"Reproduction of the {original.kind} run {link}.\n\n{text}\n\n{before}"
    )
