"""Shared fixtures: offline settings, the real MRPC files, small hand-made data sets."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import NoReturn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pathlib import Path

import pytest

from bench import cluster
from bench.cluster import free_port, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip a test whose service or tool is missing, except under CI (`CI=true`), where
    everything the suite needs is installed by `.ci/run` and a missing piece is a failure."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under CI a skipped test fails the run: CI claims to run every test the suite has."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if in_ci() and skipped and session.exitstatus == pytest.ExitCode.OK:
        reporter.write_line(f"CI=true: {skipped} test(s) skipped; CI runs every test", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def mrpc_dir() -> Path:
    """Real GLUE MRPC (train 3668 / validation 408 / test 1725), never copied into the repo."""
    path = Path(os.environ.get("FINETRACK_MRPC_DIR", ROOT.parent / "shared" / "data" / "mrpc"))
    if not (path / "train.tsv").is_file():
        pytest.fail(f"MRPC not found at {path}; set FINETRACK_MRPC_DIR")
    return path


def write_split_files(folder: Path, splits: dict[str, str], suffix: str = ".tsv") -> Path:
    """Write raw text per split (train/validation/test) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in splits.items():
        (folder / f"{split}{suffix}").write_text(text, encoding="utf-8")
    return folder


TINY_TSV = {
    "train": "sentence1\tsentence2\tlabel\na b\tc d\t0\ne f\tg h\t1\ni j\tk l\t1\n",
    "validation": "sentence1\tsentence2\tlabel\nm n\to p\t1\nq r\ts t\t0\n",
}


# Bad data sets: (case, {split: text, or None to delete the file}, expected message).
BAD_INPUTS = [
    ("missing folder", None, "data folder not found"),
    ("no validation", {"validation": None}, "no validation file"),
    ("empty split", {"validation": ""}, "empty split"),
    ("header only", {"validation": "sentence1\tsentence2\tlabel\n"}, "empty"),
    (
        "missing label",
        {"train": "sentence1\tsentence2\na\tb\n"},
        r"missing column\(s\) \['label'\]",
    ),
    ("missing sentence1", {"validation": "s\tsentence2\tlabel\na\tb\t1\n"}, "sentence1"),
    ("label outside set", {"validation": "sentence1\tsentence2\tlabel\na\tb\t7\n"}, "outside"),
    ("label not integer", {"validation": "sentence1\tsentence2\tlabel\na\tb\tyes\n"}, "integer"),
    ("one class", {"train": "sentence1\tsentence2\tlabel\na\tb\t1\nc\td\t1\n"}, "one class"),
    ("empty text", {"train": "sentence1\tsentence2\tlabel\na\t \t1\nc\td\t0\n"}, "empty text"),
]


def bad_data_dir(tmp_path: Path, change: dict[str, str | None] | None) -> Path:
    """TINY_TSV with `change` applied; `None` as the change: a folder that does not exist."""
    folder = tmp_path / "bad"
    if change is not None:
        write_split_files(folder, TINY_TSV)
        for split, text in change.items():
            if text is None:
                (folder / f"{split}.tsv").unlink()
            else:
                (folder / f"{split}.tsv").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    """A three-row pair data set in TSV with integer labels."""
    return write_split_files(tmp_path / "tiny", TINY_TSV)


def small_train_config(data_dir: Path, tmp_path: Path, **settings):
    """A FineTuneConfig on a slice of `data_dir` with every output under `tmp_path`."""
    from tasks.config import FineTuneConfig

    values = {
        "data_dir": data_dir,
        "max_train_samples": 64,
        # more rows than one evaluation batch, in batches that do not divide them (16+16+8)
        "max_eval_samples": 40,
        "eval_batch_size": 16,
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "output_dir": tmp_path / "outputs",
        "cache_dir": tmp_path / "cache",
        **settings,
    }
    return FineTuneConfig(**values)


@dataclass
class PostgresServer:
    url: str  # without a database name
    control: list[str]  # pg_ctl with this cluster's options, for `restart`

    def restart(self, down_seconds: float) -> None:
        """Stop the server, leave it down for a while, start it again."""
        subprocess.run([*self.control, "stop"], check=True, capture_output=True)
        time.sleep(down_seconds)
        subprocess.run([*self.control, "start"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A private, throw-away PostgreSQL cluster on 127.0.0.1 (`.url`, `.restart()`)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        skip_or_fail_in_ci("PostgreSQL server programs (initdb, pg_ctl) are not on PATH")
    folder = Path(tempfile.mkdtemp(prefix="finetrack-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    quiet = {"check": True, "capture_output": True}
    subprocess.run([*as_owner, initdb, "-D", str(data), "-A", "trust"], **quiet)
    # the cluster test's workers, server and studies hold many pooled connections at once
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
    log = str(folder / "log")
    subprocess.run(
        [*as_owner, pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "start"], **quiet
    )
    try:
        yield PostgresServer(
            f"postgresql+psycopg2://postgres@127.0.0.1:{port}",
            [*as_owner, pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "-m", "fast"],
        )
    finally:
        subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-m", "fast", "stop"], **quiet)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database in the private cluster."""
    import psycopg2

    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = psycopg2.connect(
        postgres_server.url.replace("postgresql+psycopg2", "postgresql") + "/postgres"
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return f"{postgres_server.url}/{name}"


@pytest.fixture(scope="module")
def prefect_backend():
    """A temporary Prefect API for one test module's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclass
class PrefectServer:
    api_url: str
    env: dict[str, str]  # what a process needs to use this server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server on a free 127.0.0.1 port with its own PREFECT_HOME."""
    with cluster.prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield PrefectServer(env["PREFECT_API_URL"], env)


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
