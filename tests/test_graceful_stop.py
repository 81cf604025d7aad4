"""SIGTERM (as from a scheduler or Ctrl-C) closes the open MLflow run as KILLED."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def test_sigterm_marks_the_run_killed(mrpc_dir, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        sys.executable, "-m", "flows.fine_tune", "--data-dir", str(mrpc_dir),
        "--max-train-samples", "400", "--max-eval-samples", "16", "--num-epochs", "5",
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
    assert job.returncode != 0
    assert client.get_run(runs[0].info.run_id).info.status == "KILLED", err.decode()[-2000:]
