"""The command line: --help, flags over YAML, bad settings refused with exit code 2, and `ui`."""

import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from flows.fine_tune import main
from tests.support.cluster import free_port, wait_until_healthy


def test_help_lists_the_settings():
    result = subprocess.run(
        [sys.executable, "-m", "flows.fine_tune", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for flag in ("--learning-rate", "--num-epochs", "--data-dir", "--config", "--bf16"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "0"], "learning_rate"),
        (["--num-epochs", "0"], "num_epochs"),
        (["--batch-size", "-8"], "batch_size"),
    ],
)
def test_bad_flags_exit_2_before_any_work(flags, message, capsys):
    assert main(flags) == 2
    assert message in capsys.readouterr().err


def finetrack(*args: str, cwd=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flows.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_default_output_is_for_a_person(mrpc_dir, tmp_path):
    result = finetrack(
        "fine-tune", "--data-dir", str(mrpc_dir), "--max-train-samples", "32",
        "--max-eval-samples", "20", "--eval-batch-size", "16", "--num-epochs", "2",
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
        "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "train: 32 rows (" in out  # the data summary
    assert "epoch 1/2: train_loss" in out and "epoch 2/2: train_loss" in out
    assert "| validation |" in out and "| test |" in out
    assert "Browse it: finetrack ui" in out
    everything = out + result.stderr
    for noise in (
        "Task run",
        "LOAD REPORT",
        "UserWarning",
        "model card",
        "license",
        "{'eval_loss'",
    ):
        assert noise not in everything, noise
    assert result.stderr.count("it/s]") <= 1 or "Loading weights" not in result.stderr


def test_bad_input_is_one_line_without_traceback(tmp_path):
    result = finetrack(
        "fine-tune", "--data-dir", str(tmp_path / "missing"),
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data folder not found: {tmp_path / 'missing'}"
    ], result.stderr[-3000:]
    verbose = finetrack(
        "fine-tune", "--verbose", "--data-dir", str(tmp_path / "missing"),
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
    )  # fmt: skip
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_every_subcommand_has_help():
    commands = ("fine-tune", "search", "retrain", "predict", "reproduce", "ui", "deploy")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    started = {  # side by side: each is mostly a Python start-up importing the project
        command: subprocess.Popen([sys.executable, "-m", "flows.cli", command, "--help"], **pipes)
        for command in commands
    }
    for command, process in started.items():
        stdout, _ = process.communicate(timeout=600)
        assert process.returncode == 0 and "usage: finetrack " + command in stdout


EMBEDDED_API_PROBE = """
import os
from flows.cli import start_embedded_api
from prefect.server.api.server import SubprocessASGIServer
wait = start_embedded_api()
wait()
server = SubprocessASGIServer()
started = server.server_process.pid if server.running else None
if started:
    from prefect import flow

    @flow
    def ping() -> int:
        return os.getpid()

    assert ping() == os.getpid()
print(started, server.server_process.pid if server.running else None, len(server._instances))
"""


def test_embedded_prefect_server_is_started_before_the_flow_and_used_by_it():
    """`finetrack` starts Prefect's embedded server while the flow's libraries import; the
    flow call must then run on that very server process, not start a second one."""
    result = subprocess.run(
        [sys.executable, "-c", EMBEDDED_API_PROBE], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    started, used, instances = result.stdout.split()
    assert started != "None" and used == started and instances == "1"


def test_no_embedded_server_when_an_api_url_is_configured():
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = subprocess.run(
        [sys.executable, "-c", EMBEDDED_API_PROBE], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["None", "None", "1"]


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_shows_the_training_view_and_stops_with_everything_it_started(tmp_path, signum):
    """`finetrack ui` prints the experiment's address in MLflow's training view; a signal to
    it stops the MLflow server with its uvicorn server and job runners, and frees the port."""
    from mlflow.tracking import MlflowClient

    from tasks.tracking import experiment_id

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = experiment_id(MlflowClient(uri), "finetrack")
    tags = MlflowClient(uri).get_experiment(experiment).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    port, log = free_port(), tmp_path / "ui.log"
    command = [sys.executable, "-m", "flows.cli", "ui", "--tracking-uri", uri, "--port", str(port)]
    with log.open("w") as stream:
        ui = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
    started: list[psutil.Process] = []
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", ui, log, "finetrack ui")
        started = psutil.Process(ui.pid).children(recursive=True)
        assert any("uvicorn" in " ".join(child.cmdline()) for child in started)
        ui.send_signal(signum)
        code = ui.wait(timeout=60)
        left = [" ".join(child.cmdline())[:120] for child in started if running(child)]
        assert left == [], left
        assert code == 0
    finally:
        ui.kill()  # whatever the test found left, so that a failure leaves nothing running
        for child in started:
            if running(child):
                child.kill()
    with socket.socket() as probe:  # nothing listens on the port any more
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    view = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?workflowType=machine_learning"
    assert view in log.read_text()
