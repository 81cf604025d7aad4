"""Independent checks of what finetrack records.

Each helper recomputes a recorded number by a path that shares no code with the one that
wrote it: the logged model through `mlflow.pyfunc` alone, the raw data files through pandas,
the run's own metric history, scikit-learn's metrics. Tests of the flows call these.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

# How far the logged model may move a probability from what the Trainer computed for the same
# row: bf16 autocast rounds activations to 8 bits of mantissa, and the two batch the rows
# differently (measured gaps up to 0.007 on MRPC slices); in fp32 only padding differs
# (measured up to 7e-7).
PROBABILITY_TOLERANCE = {"bf16": 0.03, "fp32": 1e-4}


def raw_split(data_dir: Path, split: str, rows: int) -> pd.DataFrame:
    """The first `rows` rows of a GLUE-shaped TSV, read with pandas only."""
    frame = pd.read_csv(data_dir / f"{split}.tsv", sep="\t", quoting=3, dtype=str)
    frame = frame.head(rows).reset_index(drop=True)
    return frame.assign(label=frame["label"].astype(int))


def artifact(client: MlflowClient, run_id: str, name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, name, str(folder)))


def pyfunc_predictions(
    model_uri: str, frame: pd.DataFrame, params: dict | None = None
) -> pd.DataFrame:
    """Label and score of each row from the logged model, loaded with MLflow alone."""
    model = mlflow.pyfunc.load_model(model_uri)
    inputs = pd.DataFrame({"text": frame["sentence1"], "text_pair": frame["sentence2"]})
    output = model.predict(inputs, params=params)
    return pd.DataFrame({"label": output["label"].astype(int), "score": output["score"]})


def prefect_artifact(flow_run_id: str, key: str):
    """The artifact `key` of one flow run, read back through the Prefect API."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            )

    (found,) = asyncio.run(read())
    return found.data


def markdown_table(text: str) -> dict[str, dict[str, float]]:
    """`| row | a | b |` lines of the first markdown table, as {row: {column: value}}; a
    cell's bracketed interval as {column}_ci_low and {column}_ci_high."""
    lines = []
    for line in text.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    columns = [cell.strip() for cell in lines[0].strip("|").split("|")][1:]
    table = {}
    for line in lines[2:]:
        name, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        table[name] = {}
        for column, cell in zip(columns, cells, strict=True):
            # `0.8235 [0.7868, 0.8603]`: a figure and its interval
            value, _, interval = cell.partition(" [")
            if value:
                table[name][column] = float(value)
            if interval:
                low, high = interval.rstrip("]").split(", ")
                table[name] |= {f"{column}_ci_low": float(low), f"{column}_ci_high": float(high)}
    return table


def scores(labels, predicted) -> dict[str, float]:
    return {"accuracy": accuracy_score(labels, predicted), "f1": f1_score(labels, predicted)}


def best_epoch(client: MlflowClient, run_id: str, objective: str) -> dict[str, float]:
    """The logged per-epoch eval metrics of the epoch with the best objective (the first
    such epoch on a tie, as the Trainer keeps it)."""
    history = {
        name: {m.step: m.value for m in client.get_metric_history(run_id, f"eval_{name}")}
        for name in ("accuracy", "f1", "loss")
    }
    epochs = sorted(history[objective])
    best = max(epochs, key=lambda epoch: (history[objective][epoch], -epoch))
    return {name: values[best] for name, values in history.items()} | {"epoch": best}


@dataclass
class Disagreement:
    """Rows where the run's recorded prediction differs from the logged model's."""

    rows: list[int]
    largest_probability_gap: float
    pyfunc_scores: dict[str, float]


def compare_with_pyfunc(
    predictions_csv: Path, raw: pd.DataFrame, model_uri: str, precision: str
) -> Disagreement:
    """Row i of the CSV is row i of the file, and its label and probability are what the
    logged model gives that row (up to precision: flips only on borderline rows)."""
    recorded = pd.read_csv(predictions_csv, dtype={"predicted": str, "label": str})
    assert len(recorded) == len(raw)
    assert recorded["text"].tolist() == raw["sentence1"].tolist()
    assert recorded["text_pair"].tolist() == raw["sentence2"].tolist()
    assert recorded["label"].astype(int).tolist() == raw["label"].tolist()
    # an fp32 run is compared with the model in fp32; a bf16 run with its default precision
    served = pyfunc_predictions(
        model_uri, raw, {"precision": "fp32"} if precision == "fp32" else None
    )
    spread = recorded["prob_1"].max() - recorded["prob_1"].min()
    assert spread > 20 * PROBABILITY_TOLERANCE[precision], "too uniform to show a shuffle"
    recorded_label = recorded["predicted"].astype(int)
    recorded_score = recorded[[f"prob_{name}" for name in ("0", "1")]].to_numpy()
    probability_of_served = recorded_score[np.arange(len(raw)), served["label"].to_numpy()]
    gap = np.abs(probability_of_served - served["score"].to_numpy())
    tolerance = PROBABILITY_TOLERANCE[precision]
    assert gap.max() <= tolerance, f"probabilities differ by up to {gap.max():.4f}"
    flipped = np.flatnonzero(recorded_label.to_numpy() != served["label"].to_numpy())
    # a flip is legitimate only where the two classes were within the tolerance
    assert (np.abs(recorded_score[flipped, 1] - 0.5) <= tolerance).all()
    return Disagreement(
        rows=flipped.tolist(),
        largest_probability_gap=float(gap.max()),
        pyfunc_scores=scores(raw["label"], served["label"]),
    )


def check_confusion(confusion_json: Path, predictions_csv: Path) -> None:
    """The logged confusion counts sum to the rows and equal a recount of the CSV."""
    logged = json.loads(confusion_json.read_text())
    matrix = np.array(logged["rows_true_columns_predicted"])
    recorded = pd.read_csv(predictions_csv, dtype={"predicted": str, "label": str})
    assert matrix.sum() == len(recorded)
    recount = confusion_matrix(recorded["label"], recorded["predicted"], labels=logged["labels"])
    np.testing.assert_array_equal(matrix, recount)


def native_bf16() -> bool:
    """Whether the machine computes bf16 natively, from the hardware's own description: a GPU
    of compute capability 8 or more; else the CPU flags in /proc/cpuinfo (AVX512-BF16 or
    AMX-BF16), none when `tests/without_native_bf16` emulates a CPU without them."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_capability() >= (8, 0)
    site = getattr(sys.modules.get("sitecustomize"), "__file__", None) or ""
    if Path(site).parent.name == "without_native_bf16":
        return False
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.partition(":")[2].split())
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def check_study_record(client: MlflowClient, study_run_id: str, study: optuna.Study) -> None:
    """The study run's effort, best value and description, recounted from its trial runs in
    MLflow (epochs logged, eval scores) and the trial states in the Optuna storage."""
    study_run = client.get_run(study_run_id)
    objective = study_run.data.params["objective_metric"]  # eval_f1 or eval_accuracy
    trial_runs = client.search_runs(
        [study_run.info.experiment_id],
        f"tags.mlflow.parentRunId = '{study_run_id}' and tags.`finetrack.trial_number` != ''",
    )
    epochs = 0.0
    for run in trial_runs:  # a retried trial continues its lost attempt's run
        trained = run.data.metrics["epochs_trained"]
        losses = {m.step for m in client.get_metric_history(run.info.run_id, "train_loss")}
        assert len(losses) == math.floor(trained + 1e-9), run.info.run_name  # whole epochs
        epochs += trained
    metrics = study_run.data.metrics
    assert metrics["epochs_trained"] == pytest.approx(epochs, abs=1e-9)
    states = Counter(trial.state.name for trial in study.trials)
    assert metrics["finished_trials"] == states["COMPLETE"] + states["PRUNED"]
    completed = {
        int(run.data.tags["finetrack.trial_number"]): max(
            m.value for m in client.get_metric_history(run.info.run_id, objective)
        )
        for run in trial_runs
        if run.data.tags["finetrack.trial_state"] == "COMPLETE"
    }
    assert states["COMPLETE"] == len(completed)
    description = study_run.data.tags["mlflow.note.content"]
    effort = re.search(
        r"(\d+) trial\(s\): (\d+) complete, (\d+) pruned, (\d+) failed; ([\d.]+) epochs trained",
        description,
    )
    assert effort is not None, description
    counts = tuple(int(count) for count in effort.groups()[:4])
    assert counts == (len(study.trials), states["COMPLETE"], states["PRUNED"], states["FAIL"])
    assert float(effort.group(5)) == pytest.approx(epochs, abs=1e-9)
    if not completed:
        assert "best_value" not in metrics and "Best: trial" not in description
        return
    best = max(completed.values())
    assert metrics["best_value"] == best
    first_best = min(number for number, value in completed.items() if value == best)
    name = objective.removeprefix("eval_")
    assert f"Best: trial {first_best} (" in description
    assert f"), {name} {best:.4f}." in description
