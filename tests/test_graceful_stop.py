"""SIGTERM (as from a scheduler or Ctrl-C) closes the open MLflow run as KILLED."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tasks import stop_request

pytestmark = pytest.mark.slow


def test_sigterm_marks_the_run_killed(mrpc_dir, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        sys.executable, "-m", "flows.fine_tune", "--data-dir", str(mrpc_dir),
        "--max-train-samples", "400", "--max-eval-samples", "20", "--eval-batch-size", "16",
        "--num-epochs", "5",
        "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--experiment-name", "stop",
    ]  # fmt: skip
    job = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    client = MlflowClient(uri)
    deadline = time.monotonic() + 300
    runs = []
    while time.monotonic() < deadline and not runs and job.poll() is None:
        time.sleep(1)
        experiment = (tmp_path / "mlflow.db").exists() and client.get_experiment_by_name("stop")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert runs, "the flow never started its MLflow run"
    time.sleep(3)  # inside training
    job.send_signal(signal.SIGTERM)
    try:
        _, err = job.communicate(timeout=120)
    finally:
        os.killpg(job.pid, signal.SIGKILL) if job.poll() is None else None
    assert job.returncode != 0, err.decode()[-2000:]
    assert client.get_run(runs[0].info.run_id).info.status == "KILLED", err.decode()[-2000:]


def test_the_sigterm_handler_keeps_the_request_it_raises(monkeypatch):
    monkeypatch.setattr(stop_request, "requested", None)
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        stop_request.raise_keyboard_interrupt(signal.SIGTERM, None)
    assert stop_request.requested == "signal 15"


def test_a_lost_stop_request_is_raised_again_at_the_next_step(
    mrpc_dir, tmp_path, monkeypatch, prefect_backend
):
    """As if the handler's KeyboardInterrupt had been dropped inside a finalizer: the request
    is still noted, training raises it at its first step, and the run ends KILLED."""
    from flows.fine_tune import fine_tune
    from tests.support.data import small_train_config

    config = small_train_config(mrpc_dir, tmp_path, num_epochs=1, experiment_name="lost")
    monkeypatch.setattr(stop_request, "requested", "signal 15")
    with pytest.raises(KeyboardInterrupt, match="signal 15, raised again"):
        fine_tune(config)
    client = MlflowClient(config.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lost").experiment_id])
    assert run.info.status == "KILLED"
    assert not client.get_metric_history(run.info.run_id, "train_loss")  # no epoch finished


def test_sigterm_during_a_search_leaves_the_study_consistent(mrpc_dir, tmp_path):
    """The trial in progress ends FAIL in Optuna, its run and the study run end KILLED, and a
    rerun finishes the study, running the stopped trial again in its MLflow run."""
    from optuna.trial import TrialState

    from tasks.trial_lifecycle import TrialNote
    from tests.support.search import (
        running_trial_with_a_run,
        search_command,
        trial_runs,
        trials_in,
    )

    storage = f"sqlite:///{tmp_path}/optuna.db"
    command = search_command(mrpc_dir, tmp_path, "--n-trials", "2", "--finalize", "false")
    job = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not running_trial_with_a_run(storage, tmp_path):
            assert job.poll() is None and time.monotonic() < deadline, "no trial started"
            time.sleep(0.5)
        (interrupted,) = trials_in(storage, (TrialState.RUNNING,))
        time.sleep(2)  # inside training
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):  # what is left, e.g. Prefect's server
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0

    assert not trials_in(storage, (TrialState.RUNNING,))
    (state,) = [t.state for t in trials_in(storage, None) if t.number == interrupted.number]
    assert state == TrialState.FAIL
    (trial_run,) = trial_runs(tmp_path, interrupted.number)
    assert trial_run.info.status == "KILLED"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("search-test")
    statuses = {
        r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])
    }
    assert statuses["study-shared"] == "KILLED"
    assert "RUNNING" not in statuses.values()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    finished = trials_in(storage, (TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 2, rerun.stderr[-5000:]
    # the stopped trial was queued again and finished in its own MLflow run
    (retry,) = [t for t in trials_in(storage, None) if TrialNote.RETRY_OF in t.user_attrs]
    assert retry.user_attrs[TrialNote.RETRY_OF] == interrupted.number
    assert retry.params == interrupted.params
    assert client.get_run(trial_run.info.run_id).info.status == "FINISHED"
