"""What the benchmark scripts share: running a flow's command line and saving results."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
LIBRARIES = ("torch", "transformers", "datasets", "optuna", "prefect", "mlflow")


def cpu_name() -> str:
    """The processor's model name (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    """Where a figure was measured: hardware, library versions, date."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only",
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **{name: installed(name) for name in LIBRARIES},
    }


def _start(module: str, args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as stream:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL, stderr=stream
        )


def _log(folder: Path, key) -> Path:
    return folder / (re.sub(r"[^\w.-]+", "-", str(key)).strip("-") + ".log")


def run_flows(jobs: dict, logs: Path, parallel: bool) -> dict:
    """Run `{key: (module, args)}` as a user would (`python -m module args`), one after the
    other or all at once; returns each job's wall seconds, taken when that job ends."""
    seconds: dict = {}
    batches = [list(jobs)] if parallel else [[key] for key in jobs]
    for batch in batches:
        started = time.perf_counter()
        running = {key: _start(*jobs[key], _log(logs, key)) for key in batch}
        while running:
            for key, process in list(running.items()):
                if process.poll() is None:
                    continue
                seconds[key] = round(time.perf_counter() - started, 1)
                del running[key]
                if process.returncode != 0:
                    tail = _log(logs, key).read_text()[-3000:]
                    raise RuntimeError(f"{key} failed ({process.returncode}):\n{tail}")
            time.sleep(0.5)
    return seconds


def save(name: str, results: dict, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2))
    print(f"wrote {path}")
    return path
