"""The command line: --help, flags over YAML, and bad settings refused with exit code 2."""

import os
import subprocess
import sys

import pytest

from flows.fine_tune import main


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
    assert "train: {'rows': 32" in out  # the data summary
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
    for command in ("fine-tune", "search", "retrain", "predict", "ui", "deploy"):
        result = finetrack(command, "--help")
        assert result.returncode == 0 and "usage: finetrack " + command in result.stdout


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
