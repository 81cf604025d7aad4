"""What the benchmark scripts share: running a flow's command line and saving results."""

from __future__ import annotations

import contextlib
import fcntl
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


CPU_FEATURES = ("avx2", "avx512_bf16", "amx")


def cpu_flags() -> dict[str, bool]:
    """Whether the CPU has AVX2, AVX512-BF16 and AMX (any of `amx_bf16`, `amx_tile`,
    `amx_int8`), from the `flags` line of /proc/cpuinfo (what `lscpu` prints as Flags);
    an empty dict where there is no /proc/cpuinfo."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return {}
    flags: set[str] = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {
        "avx2": "avx2" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": any(flag.startswith("amx") for flag in flags),
    }


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
        **{f"cpu_{name}": has for name, has in cpu_flags().items()},
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


@contextlib.contextmanager
def holding(lock: Path | None):
    """An exclusive `flock` on `lock` (created if missing) while the block runs; nothing
    without one. On a shared machine every timed job takes the same lock, so that no other
    heavy work runs beside it."""
    if lock is None:
        yield
        return
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_flows(jobs: dict, logs: Path, parallel: bool, lock: Path | None = None) -> dict:
    """Run `{key: (module, args)}` as a user would (`python -m module args`), one after the
    other or all at once; returns each job's wall seconds, taken when that job ends. With
    `lock`, each job (each batch, when parallel) holds an exclusive `flock` on that file while
    it runs, and its clock starts once the lock is held."""
    seconds: dict = {}
    batches = [list(jobs)] if parallel else [[key] for key in jobs]
    for batch in batches:
        with holding(lock):
            _run_batch(batch, jobs, logs, seconds)
    return seconds


def _run_batch(batch: list, jobs: dict, logs: Path, seconds: dict) -> None:
    """Start the batch's jobs together; each one's seconds are taken when it ends."""
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


def save(name: str, results: dict, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2))
    print(f"wrote {path}")
    return path
