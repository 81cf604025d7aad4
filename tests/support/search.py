"""The search command the subprocess tests run, and the polls they watch a study with."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState


def search_command(mrpc_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "flows.search",
        "--data-dir", str(mrpc_dir),
        "--max-train-samples", "48", "--max-eval-samples", "20", "--eval-batch-size", "16",
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
        "--storage", f"sqlite:///{tmp_path}/optuna.db",
        "--output-dir", str(tmp_path / "outputs"), "--cache-dir", str(tmp_path / "cache"),
        "--experiment-name", "search-test", "--study-name", "shared",
        "--num-epochs-range", "1,2", "--pruner", "none",
        "--heartbeat-interval", "1", "--grace-period", "3",
        *extra,
    ]  # fmt: skip


def wait_for(condition, timeout: float, what: str, job: subprocess.Popen | None = None):
    """What `condition()` returns once it is true, polled every 0.5 s; fails after `timeout`
    seconds, or as soon as `job` (the process that should make it true) has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job is not None and job.poll() is not None:
            pytest.fail(f"the job ended before {what}")
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def trials_in(storage: str, states) -> list:
    try:
        study = optuna.load_study(study_name="shared", storage=storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False, states=states)


def trial_runs(tmp_path, number: int) -> list:
    """The MLflow runs tagged with trial `number` (none before the worker creates one)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    if not (tmp_path / "mlflow.db").exists():
        return []
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("search-test")
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`finetrack.trial_number` = '{number}'"
    )


def running_trial_with_a_run(storage: str, tmp_path) -> bool:
    running = trials_in(storage, (TrialState.RUNNING,))
    return bool(running) and bool(trial_runs(tmp_path, running[0].number))
