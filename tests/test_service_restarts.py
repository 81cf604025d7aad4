"""Services restarting under a running job: the MLflow tracking server in the middle of
training, the study's PostgreSQL server in the middle of a trial."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.support.cluster import free_port, wait_until_healthy
from tests.support.search import search_command, trials_in, wait_for

pytestmark = pytest.mark.slow
FINETRACK = str(Path(sys.executable).parent / "finetrack")


class TrackingServer:
    """`mlflow server` on a fixed port that can be stopped and started again."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.folder / "mlflow-server.log"
        with log.open("a") as stream:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
                 "--artifacts-destination", str(self.folder / "artifacts")],
                stdout=stream, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until_healthy(f"{self.url}/health", self.process, log, "MLflow server")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return  # not running
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)


def test_training_survives_a_tracking_server_restart(mrpc_dir, tmp_path):
    """Metrics logged while the server is down arrive after it is back (MLflow's client
    retries with backoff); the run ends FINISHED with every epoch and the model."""
    server = TrackingServer(tmp_path)
    server.start()
    try:
        # 160 rows: 5 steps an epoch, epochs 2 and 3 logged while the server is down or
        # coming back (320 rows only made the test longer)
        job = subprocess.Popen(
            [FINETRACK, "fine-tune", "--data-dir", str(mrpc_dir), "--max-train-samples", "160",
             "--max-eval-samples", "20", "--eval-batch-size", "16", "--num-epochs", "3",
             "--tracking-uri", server.url, "--experiment-name", "restart",
             "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        client = MlflowClient(server.url)
        try:

            def run_with_an_epoch():
                experiment = client.get_experiment_by_name("restart")
                runs = client.search_runs([experiment.experiment_id]) if experiment else []
                logged = runs and client.get_metric_history(runs[0].info.run_id, "eval_f1")
                return runs[0] if logged else None

            logged_run = wait_for(run_with_an_epoch, 300, "an epoch was logged", job)
            server.stop()  # during epoch 2
            time.sleep(10)
            server.start()
            output, _ = job.communicate(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
        assert job.returncode == 0, output[-3000:]
        run = client.get_run(logged_run.info.run_id)
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_f1")] == [1, 2, 3]
        assert run.outputs.model_outputs  # the model was logged after the restart
    finally:  # one stop, whatever happened (no second restart just to stop it again)
        server.stop()


def test_study_survives_a_database_restart(mrpc_dir, tmp_path, postgres_server, postgres_url):
    """PostgreSQL down for 4 s in the middle of a trial: the missed heartbeats are logged, the
    connections come back, the trial goes on, the study finishes, nothing is left RUNNING."""
    command = search_command(
        mrpc_dir, tmp_path, "--n-trials", "3", "--finalize", "false",
        "--num-epochs-range", "2,2", "--max-train-samples", "160", "--storage", postgres_url,
        "--grace-period", "60",  # longer than the outage: the trial is not declared lost
    )  # fmt: skip
    job = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        running = wait_for(
            lambda: trials_in(postgres_url, (TrialState.RUNNING,)), 300, "a trial started", job
        )
        time.sleep(2)  # inside training
        postgres_server.restart(down_seconds=4)  # heartbeats every second fail meanwhile
        output, _ = job.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert not study.get_trials(states=(TrialState.FAIL,))  # the trial went on
    missed = output.count("trial heartbeat not recorded")
    assert missed >= 1, output[-3000:]  # the outage was felt, and lived through
    print(f"database down 4 s during trial {running[0].number}: {missed} heartbeats missed")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("search-test").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
