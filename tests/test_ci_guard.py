"""Under CI (`CI=true`) a missing service fails its test: CI never skips what it claims to run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NEEDS_POSTGRES = "def test_probe(postgres_server):\n    assert postgres_server.url\n"


def run_pytest(tmp_path: Path, source: str, **env: str) -> subprocess.CompletedProcess:
    """`source` as a test file run by a pytest of its own, with the suite's conftest."""
    (tmp_path / "test_probe.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "tests.conftest",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "test_probe.py"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def path_without_postgres() -> str:
    """PATH less every folder that holds initdb or pg_ctl."""
    folders = os.environ["PATH"].split(os.pathsep)
    kept = [f for f in folders if f and not (shutil.which("initdb", path=f) or
                                             shutil.which("pg_ctl", path=f))]  # fmt: skip
    return os.pathsep.join(kept)


def test_missing_postgres_fails_under_ci(tmp_path):
    result = run_pytest(tmp_path, NEEDS_POSTGRES, PATH=path_without_postgres(), CI="true")
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout  # the fixture fails: an error, never a skip
    assert "initdb, pg_ctl" in result.stdout and "CI=true" in result.stdout


def test_missing_postgres_skips_outside_ci_and_says_why(tmp_path):
    result = run_pytest(tmp_path, NEEDS_POSTGRES, PATH=path_without_postgres(), CI="")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "SKIPPED" in result.stdout and "initdb, pg_ctl" in result.stdout  # -rs: the reason


def test_any_skip_fails_the_run_under_ci(tmp_path):
    result = run_pytest(tmp_path, "import pytest\n\ndef test_probe():\n    pytest.skip('x')\n",
                        CI="true")  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "1 skipped" in result.stdout and "CI runs every test" in result.stdout
