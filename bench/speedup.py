"""Benchmark: the fine-tune flow with its defaults vs the seed's bare fp32 Trainer script.

The question users ask: how much sooner does `finetrack fine-tune` give a model than the
course chapter's script, and is it as good? For every seed, back to back (bare, flow, bare,
flow, ...): the bare script (`bench.bare_trainer`: lr 5e-5, batch 8, 3 epochs, fp32, random
batches) and the flow with its defaults, both on MRPC train with validation after every
epoch (the flow gets a folder holding only those two splits, so it predicts no test set).
Wall times are whole processes, start to exit; the flow's validation figures are the ones it
records (scored by `trainer.predict` in the order given, checked by the true-record tests).

`--emulate-avx2` limits PyTorch's kernels, oneDNN and MKL to AVX2 for both
(`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`, `MKL_ENABLE_INSTRUCTIONS`) and passes `--bf16 off`
to the flow, which is what its `auto` setting decides on a CPU without native bf16: a
stand-in for an AVX2-only machine, not the same thing.

    .venv/bin/python -m bench.speedup --data-dir ../shared/data/mrpc
    .venv/bin/python -m bench.speedup --merge a/speedup.json b/speedup.json   # seeds run apart
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench import report
from bench.common import RESULTS, run_flows, save
from bench.overhead import two_splits
from bench.training_speed import MEASURED, summarise
from tasks.config import PACKAGED_MODEL
from tasks.model import resolve_model
from tasks.train import use_bf16

AVX2_ONLY = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
FLOW_METRICS = ("train_samples_per_second", "train_seconds", "validation_accuracy", "validation_f1")
SUMMARISED = ("wall_seconds", *MEASURED)
RECIPE = (
    "learning_rate", "batch_size", "num_epochs", "bf16", "group_by_length", "frozen_layers",
    "frozen_features_cached",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="MRPC folder (required unless --merge)")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--max-train-samples", type=int, help="a slice, for a smoke run")
    parser.add_argument("--emulate-avx2", action="store_true", help="see the module's doc")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="result files of single seeds, run apart: one file"
    )
    args, flow_extra = parser.parse_known_args()
    if args.merge:
        return merge(args.merge, args.results)
    if args.data_dir is None:
        parser.error("--data-dir is required")
    flow_extra = [arg for arg in flow_extra if arg != "--"]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.emulate_avx2:
        os.environ.update(AVX2_ONLY)  # inherited by every process run_flows starts
        flow_extra += ["--bf16", "off"]
    slice_flags = ["--max-train-samples", str(args.max_train_samples)] * bool(
        args.max_train_samples
    )
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data = two_splits(args.data_dir, work / "data")
        tracking = f"sqlite:///{work}/mlflow.db"
        jobs = {}
        for seed in seeds:
            # fmt: off
            jobs[("bare", seed)] = (
                "bench.bare_trainer",
                ["--data-dir", str(data), "--model", resolve_model(PACKAGED_MODEL),
                 "--seed", str(seed), "--result", str(work / f"bare-{seed}.json"), *slice_flags],
            )
            jobs[("flow", seed)] = (
                "flows.cli",  # the `finetrack` command
                ["fine-tune", "--data-dir", str(data), "--tracking-uri", tracking,
                 "--seed", str(seed),
                 "--output-dir", str(work / f"outputs-{seed}"),
                 "--cache-dir", str(work / f"cache-{seed}"),  # a first run: no cache hit
                 "--experiment-name", "bench-speedup", "--run-name", f"seed-{seed}",
                 *slice_flags, *flow_extra],
            )
            # fmt: on
        seconds = run_flows(jobs, work, parallel=False)
        bare = [
            {"seed": seed, "wall_seconds": seconds[("bare", seed)]}
            | json.loads((work / f"bare-{seed}.json").read_text())
            for seed in seeds
        ]
        client = MlflowClient(tracking)
        experiment = client.get_experiment_by_name("bench-speedup")
        runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
        flow = [
            {"seed": seed, "wall_seconds": seconds[("flow", seed)]}
            | {key: runs[f"seed-{seed}"].data.metrics[key] for key in FLOW_METRICS}
            for seed in seeds
        ]
        recipe = {key: runs[f"seed-{seeds[0]}"].data.params.get(key) for key in RECIPE}
    results = {
        "settings": {
            "seeds": seeds,
            "max_train_samples": args.max_train_samples,
            "emulate_avx2": args.emulate_avx2,
            "flow_arguments": flow_extra,
            "flow_recipe": recipe,
            "bf16_auto_here": use_bf16("auto"),
        },
        "bare": {"runs": bare, **summarise(bare, SUMMARISED)},
        "flow": {"runs": flow, **summarise(flow, SUMMARISED)},
    }
    name = "speedup_avx2" if args.emulate_avx2 else "speedup"
    show_and_save(f"{name}_smoke" if args.max_train_samples else name, results, args.results)


def merge(paths: list[Path], folder: Path) -> None:
    """One result from runs of the same settings with other seeds (a long bench split up)."""
    parts = [json.loads(path.read_text()) for path in paths]
    settings = [{k: v for k, v in part["settings"].items() if k != "seeds"} for part in parts]
    if any(other != settings[0] for other in settings):
        raise SystemExit("the files were run with different settings: nothing merged")
    results = {"settings": {**parts[0]["settings"], "seeds": []}, "merged_from": len(parts)}
    for part in parts:
        results["settings"]["seeds"] += part["settings"]["seeds"]
    for side in ("bare", "flow"):
        runs = [run for part in parts for run in part[side]["runs"]]
        results[side] = {"runs": runs, **summarise(runs, SUMMARISED)}
    show_and_save("speedup_avx2" if settings[0]["emulate_avx2"] else "speedup", results, folder)


def show_and_save(name: str, results: dict, folder: Path) -> None:
    print("\n".join(report.speedup(results)))
    save(f"{name}.json", results, folder)


if __name__ == "__main__":
    main()
