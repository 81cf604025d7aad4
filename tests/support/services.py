"""Services the tests start or need: CI's rule for a missing one, the PostgreSQL and Prefect
server handles the fixtures yield, an `mlflow server`, and headless Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.cluster import free_port, wait_until_healthy


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip a test whose service or tool is missing, except under CI (`CI=true`), where
    everything the suite needs is installed by `.ci/run` and a missing piece is a failure."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)", pytrace=False)
    pytest.skip(reason)


@dataclass
class PostgresServer:
    url: str  # without a database name
    control: list[str]  # pg_ctl with this cluster's options, for `restart`

    def restart(self, down_seconds: float) -> None:
        """Stop the server, leave it down for a while, start it again."""
        subprocess.run([*self.control, "stop"], check=True, capture_output=True)
        time.sleep(down_seconds)
        subprocess.run([*self.control, "start"], check=True, capture_output=True)


@dataclass
class PrefectServer:
    api_url: str
    env: dict[str, str]  # what a process needs to use this server


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path | None = None):
    """`mlflow server` on a free 127.0.0.1 port over `backend_uri` (artifacts proxied to the
    `artifacts` folder, default a temporary one); yields its URL."""
    port = free_port()
    folder = Path(tempfile.mkdtemp())
    log = folder / "mlflow-server.log"
    destination = artifacts or folder / "artifacts"
    with log.open("w") as stream:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--backend-store-uri", backend_uri,
             "--artifacts-destination", str(destination)],
            stdout=stream, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/health", server, log, "MLflow server")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


@contextlib.contextmanager
def browser_page():
    """A page of headless Chromium (Debian's package) driven by Playwright."""
    try:
        from playwright import sync_api
    except ImportError:
        skip_or_fail_in_ci("playwright is not installed")
    chromium = shutil.which("chromium")
    if chromium is None:
        skip_or_fail_in_ci("Debian's chromium is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1600, "height": 1000})
        finally:
            browser.close()
