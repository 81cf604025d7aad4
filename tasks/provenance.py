"""What ran and where: the code (finetrack's version, git commit and dirty flag, a hash of its
sources) and the machine (CPU model and the flags that decide the recipe, GPU, threads).

Every run records these as tags, so that `finetrack reproduce` can tell what differs. The
machine matters to the result: `--bf16 auto` and `--freeze-layers auto` resolve from it (a
CPU trains 2 frozen layers in fp32, a GPU every weight in bf16 where it computes bf16),
`--bf16 on` needs native bf16 (AMX or AVX512-BF16 on a CPU), and fp32 sums come out in
another order with another thread count.
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from tasks.machine_recipe import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("flows", "tasks")  # the packages whose code decides a run
RECIPE_FLAGS = ("avx2", "avx512_bf16", "amx_bf16", "amx_tile")  # what bf16 and freezing read
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own name for it
VERSION = "finetrack.version"
GIT_DIRTY = "finetrack.git_dirty"
SOURCE_HASH = "finetrack.source_hash"
CPU = "finetrack.machine.cpu"
CPU_FLAGS = "finetrack.machine.cpu_flags"
NATIVE_BF16 = "finetrack.machine.native_bf16"
GPU = "finetrack.machine.gpu"
THREADS = "finetrack.machine.threads"
CODE_TAGS = (VERSION, GIT_COMMIT, GIT_DIRTY, SOURCE_HASH)
MACHINE_TAGS = (CPU, CPU_FLAGS, NATIVE_BF16, GPU, THREADS)


def source_hash(root: Path = ROOT) -> str:
    """SHA-256 over the path and bytes of every `.py` file of the packages: the code, where no
    git commit names it (or the tree has changes)."""
    digest = hashlib.sha256()
    for path in sorted(p for package in SOURCES for p in (root / package).rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _git(root: Path, *words: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *words], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


def git_state(root: Path = ROOT) -> tuple[str, bool] | None:
    """The commit checked out and whether the tree differs from it (untracked files count),
    when `root` is the top of a git checkout; None for an installed copy or without git."""
    try:
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None  # e.g. a virtual environment inside some other repository
        return _git(root, "rev-parse", "HEAD"), bool(_git(root, "status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> dict[str, str]:
    """finetrack's version and source hash; the git commit and dirty flag in a checkout."""
    tags = {VERSION: "unknown", SOURCE_HASH: source_hash()}
    with contextlib.suppress(PackageNotFoundError):
        tags[VERSION] = version("finetrack")
    state = git_state()
    if state:
        tags[GIT_COMMIT], tags[GIT_DIRTY] = state[0], str(state[1])
    return tags


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """The CPU's model name and flags as the kernel lists them (Linux); elsewhere what
    `platform` knows, without flags."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                model = value
            elif key == "flags":
                flags = set(value.split())
                break  # the first processor's block has both
    return model, flags


def machine(threads: int | None = None) -> dict[str, str]:
    """The machine kind that decides the recipe: CPU model, its bf16-relevant flags, whether
    torch sees native bf16 (what `--bf16 on` needs), the GPU, and the training threads
    (`threads`, else torch's count)."""
    model, flags = cpu_info()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        CPU: model,
        CPU_FLAGS: ",".join(flag for flag in RECIPE_FLAGS if flag in flags) or "none",
        NATIVE_BF16: str(cpu_has_native_bf16()),
        GPU: gpu,
        THREADS: str(threads or torch.get_num_threads()),
    }


def tags(threads: int | None = None) -> dict[str, str]:
    """Code and machine, as a run's tags."""
    return code_version() | machine(threads)
