"""A Prefect cluster on one machine: a server on 127.0.0.1, the project's deployments, and
process workers each started from its own copy of the project (as on separate machines).
The cluster tests and `bench.parallel_search` run on it (bench/ imports it from here;
tests/ never import bench/)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)


def project_copy(folder: Path) -> Path:
    """The project's code in another folder (another machine's checkout)."""
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "mlruns", "outputs", ".cache", "*.db", "__pycache__", "*.egg-info"
    )
    shutil.copytree(ROOT, folder, ignore=ignore)
    return folder


class Worker:
    """`prefect worker start` from its own checkout, one flow run at a time."""

    def __init__(self, name: str, home: Path, env: dict, logs: Path):
        self.name, self.home, self.env, self.log = name, home, env, logs / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as stream:
            self.process = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", "local", "--name", self.name,
                 "--limit", "1"],
                cwd=self.home, env=self.env | {"FINETRACK_HOME": str(self.home)},
                stdout=stream, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL to its process group, as when its machine is lost."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def interrupt(self) -> None:
        if self.running():
            os.killpg(self.process.pid, signal.SIGINT)


def stop_all(workers: list[Worker]) -> None:
    """SIGINT to every worker at once, a second one to those still there after 10 s (a worker
    busy with a flow run exits on the second), then SIGKILL to any left 30 s later."""
    for patience in (10, 30):
        for worker in workers:
            worker.interrupt()
        deadline = time.monotonic() + patience
        while any(worker.running() for worker in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
    for worker in workers:
        if worker.running():
            worker.kill()


@contextmanager
def prefect_server(home: Path) -> Iterator[dict]:
    """A Prefect server with its own PREFECT_HOME; yields the environment that uses it."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = home / "server.log"
    with log.open("w") as stream:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until_healthy(f"{api_url}/health", server, log, "Prefect server")
        yield env | {"PREFECT_API_URL": api_url}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


@contextmanager
def workers(env: dict, folder: Path, count: int) -> Iterator[list[Worker]]:
    """The deployments (`finetrack deploy`) and `count` workers, each in its own checkout."""
    env = env | {"PREFECT_WORKER_QUERY_SECONDS": "1"}  # Prefect's default: every 10 s
    deployed = subprocess.run(
        [str(BIN / "finetrack"), "deploy"], cwd=folder, env=env | {"FINETRACK_HOME": str(ROOT)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if deployed.returncode != 0:
        raise RuntimeError(deployed.stdout + deployed.stderr)
    (folder / "logs").mkdir(exist_ok=True)
    started = [
        Worker(f"machine-{index}", project_copy(folder / f"machine-{index}"), env, folder / "logs")
        for index in range(count)
    ]
    for worker in started:
        worker.start()
    try:
        yield started
    finally:
        stop_all(started)


def run_deployment(env: dict, name: str, config: dict, timeout: int = 3600) -> subprocess.Popen:
    """`prefect deployment run NAME --params {"config": ...} --watch`, started."""
    return subprocess.Popen(
        [str(BIN / "prefect"), "deployment", "run", name, "--params",
         json.dumps({"config": config}), "--watch", "--watch-timeout", str(timeout)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
