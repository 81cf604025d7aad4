"""Reproduce a recorded run: rebuild its configuration from the record, say before training
what differs from when it ran, and compare the new run's numbers with the recorded ones.

A fine-tune run (a search's confirmation runs are fine-tune runs) keeps its configuration as
`config.json`; a trial keeps the same settings as params. Both record the data fingerprint,
the library versions, the code and the machine (`tasks/provenance.py`), and the recipe the
machine resolved (`bf16_active`, `frozen_layers`). A study run trained nothing itself: it is
refused, with the runs under it that can be reproduced.
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks import provenance, tracking
from tasks.config import FineTuneConfig, validated
from tasks.data import LoadedData
from tasks.errors import RefusedError
from tasks.model import load_model
from tasks.study_record import TRIAL_TAG
from tasks.train import layers_to_freeze, use_bf16

REPRODUCES_TAG = "finetrack.reproduces"
VERDICT_TAG = "finetrack.reproduction.verdict"
TOLERANCE_TAG = "finetrack.reproduction.tolerance"
LABELS_CHANGED_TAG = "finetrack.reproduction.labels_changed"
REPORT = "reproduction.json"
CONFIG_ARTIFACT = "config.json"
EPOCH_METRICS = tuple(tracking.EpochMetricsLogger.NAMES.values())
HELD_OUT = ("validation_", "test_")  # the metrics of the best epoch on the held-out splits
PREDICTIONS = re.compile(r"predictions_(?P<split>.+)\.csv")
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
class Original:
    """A recorded run to reproduce."""

    run: Run
    kind: str  # fine-tune, confirmation or trial
    experiment: str

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def name(self) -> str:
        return self.run.info.run_name


def read_original(client: MlflowClient, run_id: str) -> Original:
    """The run, if it trained a model that can be trained again and recorded something to
    compare; a study run is refused with the runs under it."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        store = tracking.redact(client.tracking_uri)
        raise RefusedError(f"no run {run_id} in the tracking store {store}") from None
    tags = run.data.tags
    experiment = client.get_experiment(run.info.experiment_id).name
    if tags.get("finetrack.flow") == "search":
        children = client.search_runs(
            [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"
        )
        names = ", ".join(f"{c.info.run_name} ({c.info.run_id})" for c in children) or "none yet"
        raise RefusedError(
            f"run {run_id} ({run.info.run_name}) is a study: it trained nothing itself; its "
            f"trial and confirmation runs can be reproduced: {names}"
        )
    if TRIAL_TAG in tags:
        kind = "trial"
    elif tags.get("finetrack.flow") == "fine-tune":
        kind = "confirmation" if "finetrack.confirm_of_trial" in tags else "fine-tune"
    else:
        raise RefusedError(
            f"run {run_id} ({run.info.run_name}) is not a fine-tune, trial or confirmation run"
        )
    original = Original(run, kind, experiment)
    if not client.get_metric_history(run_id, "eval_loss") and not _prediction_files(client, run):
        raise RefusedError(
            f"run {run_id} ({run.info.run_name}) recorded no epoch and no predictions: "
            "nothing to compare a reproduction with"
        )
    return original


def _prediction_files(client: MlflowClient, run: Run) -> dict[str, str]:
    """Split name -> `predictions_<split>.csv` among the run's artifacts."""
    found = (PREDICTIONS.fullmatch(a.path) for a in client.list_artifacts(run.info.run_id))
    return {match["split"]: match.group(0) for match in found if match}


def _settings_from_params(params: dict[str, str]) -> dict[str, object]:
    """FineTuneConfig settings back from their `str()` in the params (`FineTuneConfig.params`):
    pydantic reads numbers, booleans and paths from text; None and lists are spelt in Python."""
    values: dict[str, object] = {}
    for name in FineTuneConfig.model_fields.keys() & params.keys():
        text = params[name]
        values[name] = None if text == "None" else text
        if text.startswith("["):
            values[name] = ast.literal_eval(text)
    return values


def recorded_settings(client: MlflowClient, original: Original) -> dict[str, object]:
    """The configuration the run trained with: its `config.json`, else its params (a trial)."""
    run_id = original.run_id
    if any(a.path == CONFIG_ARTIFACT for a in client.list_artifacts(run_id)):
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, folder)
            values = json.loads(Path(path).read_text(encoding="utf-8"))
    else:
        values = _settings_from_params(original.run.data.params)
    # the default pair column is optional (single-sentence data); written out it is required
    if values.get("text_pair_column") == FineTuneConfig.model_fields["text_pair_column"].default:
        del values["text_pair_column"]
    return values


def rebuild_config(
    client: MlflowClient, original: Original, data_dir: Path | None
) -> tuple[FineTuneConfig, dict[str, list]]:
    """The run's configuration, changed only where a reproduction must differ: the data where
    they are now (`data_dir`, else the absolute folder recorded as `data_source`), this store
    and the run's experiment, a name of its own, no model logged or registered, and the
    thread count the run trained with (fp32 sums depend on it). Returns the config and each
    changed setting as [recorded, reproduction]."""
    values = recorded_settings(client, original)
    params, tags = original.run.data.params, original.run.data.tags
    source = params.get("data_source", "")
    if data_dir is None and source and "://" not in source:  # a Hub data set stays as it was
        data_dir = Path(source)
    changes: dict[str, object] = {
        "tracking_uri": client.tracking_uri,
        "experiment_name": original.experiment,
        "run_name": f"reproduce-{original.name}",
        "registered_model_name": None,
        "log_model": False,
        "onnx_export": "none",
    }
    if data_dir is not None:
        changes["data_dir"] = str(data_dir)
    if provenance.THREADS in tags:
        changes["threads"] = int(tags[provenance.THREADS])
    changed = {
        name: [values.get(name), value]
        for name, value in changes.items()
        if str(values.get(name)) != str(value)
    }
    return validated(FineTuneConfig, {**values, **changes}), changed


def recorded_fingerprint(client: MlflowClient, run: Run) -> str | None:
    """The data fingerprint of the run; a trial from before trials recorded it has its
    study's."""
    found = run.data.params.get("data_fingerprint") or run.data.tags.get(
        "finetrack.data_fingerprint"
    )
    parent = run.data.tags.get("mlflow.parentRunId")
    if found is None and parent:
        found = client.get_run(parent).data.params.get("data_fingerprint")
    return found


@dataclass
class Checks:
    """What differs from when the run ran, found before training."""

    warnings: list[str]
    precision: str  # fp32 or bf16: which TOLERANCE applies


def _code_text(tags: dict[str, str]) -> str:
    text = f"finetrack {tags.get(provenance.VERSION, 'unknown')}"
    if provenance.GIT_COMMIT in tags:
        text += f", commit {tags[provenance.GIT_COMMIT][:12]}"
        text += " with changes" if tags.get(provenance.GIT_DIRTY) == "True" else ""
    return f"{text}, sources {tags.get(provenance.SOURCE_HASH, 'unknown')[:12]}"


def _recipe_text(bf16: bool, frozen: int) -> str:
    return f"{'bf16' if bf16 else 'fp32'}, {frozen} frozen layer(s)"


def _machine_text(tags: dict[str, str]) -> str:
    names = (provenance.CPU, provenance.CPU_FLAGS, provenance.GPU)
    cpu, flags, gpu = (tags.get(name, "not recorded") for name in names)
    return f"{cpu} ({flags}; GPU {gpu})"


def check(
    client: MlflowClient,
    original: Original,
    data: LoadedData,
    config: FineTuneConfig,
    model_path: str,
    allow_data_change: bool = False,
) -> Checks:
    """Data, code, libraries and machine against the record. Other data are refused unless
    `allow_data_change`; the rest are warnings, each naming both sides."""
    params, tags = original.run.data.params, original.run.data.tags
    warnings = []
    recorded = recorded_fingerprint(client, original.run)
    if recorded != data.fingerprint:
        message = (
            f"the data differ from the run's: fingerprint {data.fingerprint[:12]} in "
            f"{data.source}, the run recorded {(recorded or 'none')[:12]}"
        )
        if not allow_data_change:
            raise RefusedError(f"{message}; --allow-data-change reproduces on them anyway")
        warnings.append(message)
    code = provenance.code_version()
    if any(tags.get(name) != code.get(name) for name in provenance.CODE_TAGS):
        warnings.append(
            f"the code differs: the run ran {_code_text(tags)}, this is {_code_text(code)}"
        )
    libraries = tracking.library_versions()
    changed = [
        f"{name.removesuffix('_version')} {params.get(name, 'not recorded')} -> "
        f"{libraries.get(name, 'not installed')}"
        for name in sorted(libraries.keys() | {k for k in params if k.endswith("_version")})
        if params.get(name) != libraries.get(name)
    ]
    if changed:
        warnings.append(f"library versions differ: {', '.join(changed)}")
    bf16 = use_bf16(config.bf16)
    frozen = layers_to_freeze(config.freeze_layers, bf16, load_model(model_path, data.label_names))
    ran = params.get("bf16_active") == "True", int(params.get("frozen_layers", frozen))
    if "bf16_active" in params and ran != (bf16, frozen):
        warnings.append(
            f"this machine resolves the recipe to {_recipe_text(bf16, frozen)}, the run trained "
            f"{_recipe_text(*ran)}: it ran on {_machine_text(tags)}, this is "
            f"{_machine_text(provenance.machine())}"
        )
    return Checks(warnings, "bf16" if bf16 or ran[0] else "fp32")


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
    reproduced = _prediction_files(client, client.get_run(reproduction_id))
    with tempfile.TemporaryDirectory() as folder:
        for split, name in sorted(_prediction_files(client, original.run).items()):
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
