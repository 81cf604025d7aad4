"""Benchmark: training speed and validation quality of the speed-ups over plain fp32.

Each configuration is the bare Trainer script (`bench.bare_trainer`, seed recipe) with some
speed-ups switched on, run back to back (or all at once with `--parallel`, for a GPU) with
every seed. bf16 autocast is measured only where it can pay: on CUDA, or on a CPU with
native bf16 units (AMX or AVX512-BF16); elsewhere it is listed as skipped, with the reason.

    .venv/bin/python -m bench.training_speed --data-dir ../shared/data/mrpc
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from bench import report
from bench.common import RESULTS, run_flows, save
from tasks.config import PACKAGED_MODEL
from tasks.machine_recipe import cpu_has_native_bf16
from tasks.model import resolve_model

CONFIGS = {
    "fp32": [],
    "group_by_length": ["--group-by-length"],
    "bf16": ["--bf16"],
    "bf16+group_by_length": ["--bf16", "--group-by-length"],
}
MEASURED = ("train_samples_per_second", "validation_accuracy", "validation_f1")


def skip_reason(config: str) -> str | None:
    """Why a configuration is not worth running on this machine, or None."""
    if "bf16" in config and not (torch.cuda.is_available() or cpu_has_native_bf16()):
        return "no native bf16 on this CPU (no AMX, no AVX512-BF16): autocast would emulate it"
    return None


def summarise(runs: list[dict], keys: tuple[str, ...] = MEASURED) -> dict:
    """Mean and (with several seeds) standard deviation of each measured figure."""
    stats = {}
    for key in keys:
        if not all(key in run for run in runs):
            continue  # a figure older records do not have (e.g. test scores)
        values = [run[key] for run in runs]
        spread = statistics.stdev(values) if len(values) > 1 else None
        stats[key] = {"mean": statistics.fmean(values), "std": spread}
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"some of {list(CONFIGS)}")
    parser.add_argument("--model", default=PACKAGED_MODEL, help="model folder")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--max-train-samples", type=int, help="a slice, for a smoke run")
    parser.add_argument("--parallel", action="store_true", help="run everything at once")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    configs = args.configs.split(",")
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {list(CONFIGS)}")
    skipped = {name: skip_reason(name) for name in configs if skip_reason(name)}
    measured = [name for name in configs if name not in skipped]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    common = ["--model", resolve_model(args.model), "--num-epochs", str(args.num_epochs)]
    if args.max_train_samples:
        common += ["--max-train-samples", str(args.max_train_samples)]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        jobs = {
            (name, seed): (
                "bench.bare_trainer",
                ["--data-dir", str(args.data_dir), "--seed", str(seed),
                 "--result", str(work / f"{name}-{seed}.json"), "--select-epoch", "last",
                 *common, *CONFIGS[name]],
            )
            for name in measured
            for seed in seeds
        }  # fmt: skip
        seconds = run_flows(jobs, work, args.parallel)
        rows = {
            name: [
                {"seed": seed, "wall_seconds": seconds[(name, seed)]}
                | json.loads((work / f"{name}-{seed}.json").read_text())
                for seed in seeds
            ]
            for name in measured
        }
    results = {
        "settings": {
            "num_epochs": args.num_epochs,
            "max_train_samples": args.max_train_samples,
            "seeds": seeds,
            "parallel": args.parallel,
            "cuda": torch.cuda.is_available(),
        },
        "configs": {name: {"runs": runs, **summarise(runs)} for name, runs in rows.items()},
        "skipped": skipped,
    }
    print("\n".join(report.training_speed(results)))
    smoke = "_smoke" if args.max_train_samples else ""
    save(f"training_speed{smoke}.json", results, args.results)


if __name__ == "__main__":
    main()
