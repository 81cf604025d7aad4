"""MLflow bookkeeping through explicit run ids.

Every call names the run it writes to (MlflowClient or `run_id=`), never MLflow's per-thread
"active run": Prefect runs tasks on worker threads, and a search runs trials side by side.
A run is always closed: FINISHED, FAILED on an exception, KILLED on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import ClassVar

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from transformers import TrainerCallback

from tasks.errors import TrackingError

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow 3's UI shows an experiment as GenAI work (Traces, Judges, "Evaluation runs") unless
# the address asks for its machine-learning view or, where the UI reads it, the experiment's
# kind says so (MLflow 3.17 reads only the address).
TRAINING_VIEW = "workflowType=machine_learning"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
TRACKED_PACKAGES = ("torch", "transformers", "datasets", "evaluate", "prefect", "mlflow", "optuna")


def redact(uri: str) -> str:
    """Hide a password in a URI (scheme://user:secret@host -> scheme://user:***@host)."""
    return re.sub(r"(//[^/:@]+):[^/@]+@", r"\1:***@", uri)


def resolve_tracking_uri(configured: str | None) -> str:
    """Config first, then $MLFLOW_TRACKING_URI, then a SQLite file in the working folder."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def connect(configured: str | None, timeout: float = 10.0) -> MlflowClient:
    """Point MLflow at the store and check that a remote server answers, without hanging."""
    uri = resolve_tracking_uri(configured)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                reply.read()
        except OSError as error:
            message = f"MLflow tracking server {redact(uri)} unreachable: {error}"
            raise TrackingError(message) from None
    mlflow.set_tracking_uri(uri)
    with sqlite_creation_lock(uri):  # workers starting together must not both create tables
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    return client


@contextlib.contextmanager
def sqlite_creation_lock(uri: str) -> Iterator[None]:
    """An inter-process lock beside a SQLite database file; no-op for other URLs."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(database) + ".lock", timeout=300):
        yield


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id; a new one is of the machine-learning kind (EXPERIMENT_KIND), and
    if SQLite-tracked keeps artifacts in mlruns/ beside the database file (so the default
    store lives in the project folder)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:///"):
        database = Path(client.tracking_uri.removeprefix("sqlite:///"))
        location = (database.resolve().parent / "mlruns" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # another worker created it just now
        if experiment is None:
            raise
        return experiment.experiment_id


def experiment_page(ui_address: str, uri: str, name: str) -> str:
    """Where the UI at `ui_address` shows the runs of experiment `name` (of the store at
    `uri`) in its training view; the experiment list while the store lacks it."""
    with sqlite_creation_lock(uri):
        experiment = MlflowClient(uri).get_experiment_by_name(name)
    route = f"experiments/{experiment.experiment_id}/runs" if experiment else "experiments"
    return f"{ui_address}/#/{route}?{TRAINING_VIEW}"


@contextlib.contextmanager
def tracked_run(
    client: MlflowClient,
    experiment: str,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """Create (or reopen) a run, yield its id, and always close it with the fitting status:
    FAILED for an error, KILLED when stopped from outside (anything not an Exception)."""
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if resume_run_id:
        client.update_run(resume_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        run = client.get_run(resume_run_id)
    else:
        exp_id = experiment_id(client, experiment)
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    log.info("MLflow run %s (%s) in experiment %r", run.info.run_name, run_id, experiment)
    try:
        yield run_id
    except Exception:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    except BaseException:  # Ctrl-C, SystemExit, an orchestrator's termination signal
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide the result, for the run's params."""
    versions = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            versions[f"{package}_version"] = version(package)
    return versions


def describe(client: MlflowClient, run_id: str, text: str) -> None:
    """The run's description in the MLflow UI (markdown)."""
    client.set_tag(run_id, "mlflow.note.content", text)


def param_values(params: dict[str, object]) -> dict[str, str]:
    """Params as the store keeps them: text, at most 6,000 characters."""
    return {key: str(value)[:6000] for key, value in params.items()}


def log_params(client: MlflowClient, run_id: str, params: dict[str, object]) -> None:
    """Log params in batches (the store takes at most 100 per call)."""
    items = [Param(key, value) for key, value in param_values(params).items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(
    client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0
) -> None:
    """Log several metrics at one step in one call."""
    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
    client.log_batch(run_id, metrics=batch)


class EpochMetricsLogger(TrainerCallback):
    """Sends the Trainer's per-epoch train loss and validation metrics to one MLflow run,
    each epoch once its checkpoint is written.

    A worker lost between an epoch's evaluation and its checkpoint leaves that epoch out of
    MLflow, and the retry (from the checkpoint before) logs it once, when it has trained it
    again. A run resumed from a checkpoint first logs the epochs the checkpoint holds and
    MLflow lacks (a worker lost between the checkpoint and the logging)."""

    NAMES: ClassVar[dict[str, str]] = {
        "loss": "train_loss",
        "eval_loss": "eval_loss",
        "eval_accuracy": "eval_accuracy",
        "eval_f1": "eval_f1",
        "learning_rate": "learning_rate",
    }

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id
        self.pending: dict[int, dict[str, float]] = {}  # by epoch, until its checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.log_history:
            return  # a fresh start, not a resumed checkpoint
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "eval_loss")}
        for row in state.log_history:
            self.collect(row, row.get("epoch"))
        self.pending = {e: m for e, m in self.pending.items() if e not in logged}
        self.flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.collect(logs, state.epoch)

    def on_save(self, args, state, control, **kwargs):
        self.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()  # an epoch evaluated and not saved: a trial pruned at its end

    def collect(self, logs: dict | None, epoch: float | None) -> None:
        metrics = {name: logs[key] for key, name in self.NAMES.items() if logs and key in logs}
        if metrics and epoch is not None:
            self.pending.setdefault(round(epoch), {}).update(metrics)

    def flush(self) -> None:
        for epoch, metrics in sorted(self.pending.items()):
            log_metrics(self.client, self.run_id, metrics, step=epoch)
        self.pending.clear()


def log_files(client: MlflowClient, run_id: str, files: dict[str, object]) -> None:
    """Write small artifacts (text, JSON-able values, DataFrames as CSV) and upload them."""
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            path = Path(folder) / name
            if isinstance(content, pd.DataFrame):
                content.to_csv(path, index=False)
            elif isinstance(content, str):
                path.write_text(content, encoding="utf-8")
            else:
                path.write_text(json.dumps(content, indent=2, default=str), encoding="utf-8")
            client.log_artifact(run_id, str(path))


def log_evaluation(client: MlflowClient, run_id: str, results: dict, label_names: list[str]):
    """Final metrics (`validation_f1`, `test_accuracy`, ...), predictions, confusion matrices
    (JSON counts and a PNG)."""
    from tasks.evaluation import plot_confusion

    metrics = {
        f"{split}_{name}": value
        for split, result in results.items()
        for name, value in result.metrics.items()
    }
    if metrics:
        log_metrics(client, run_id, metrics)
    files: dict[str, object] = {
        f"predictions_{split}.csv": result.predictions for split, result in results.items()
    }
    files |= {
        f"confusion_matrix_{split}.json": {
            "labels": label_names,
            "rows_true_columns_predicted": result.confusion.tolist(),
        }
        for split, result in results.items()
        if result.confusion is not None
    }
    log_files(client, run_id, files)
    with tempfile.TemporaryDirectory() as folder:
        for split, result in results.items():
            if result.confusion is not None:
                path = Path(folder) / f"confusion_matrix_{split}.png"
                plot_confusion(result.confusion, label_names, f"{split} confusion matrix", path)
                client.log_artifact(run_id, str(path))
