"""Benchmark: the fine-tune flow with its defaults vs the seed's bare fp32 Trainer script.

The question users ask: how much sooner does `finetrack fine-tune` give a model than the
course chapter's script, and is it as good on rows neither has seen? For every seed, back to
back (bare, flow, bare, flow, ...): the bare script (`bench.bare_trainer`: lr 5e-5, batch 8,
3 epochs, fp32, random batches) and the flow with its defaults, on equal footing:

- both get the same folder of train, validation and test (links to the data folder's TSVs);
- both keep the same epoch: the best by validation F1 of label 1 (the flow's
  `objective_metric` `auto` on MRPC; `load_best_model_at_end` in both, first epoch on a tie:
  `bench.bare_trainer --select-epoch best`);
- both are judged on the **test** split, never seen in training nor in choosing the epoch,
  with the same metric definitions (accuracy; F1 of label 1). The flow's figures are the ones
  it records; the bare script's come from `trainer.predict` on test.

Per seed: whole-process wall times (start to exit) and their ratio bare / flow; over the
seeds: the mean paired difference flow - bare of test accuracy and test F1 (and validation,
for reference: it chose the epoch, so it is not held out) with its 95% Student t interval
(`tasks.uncertainty.seed_paired_difference`), and the wall-time ratio of the means and the
mean of the per-seed ratios. `--lock FILE`: each process holds an exclusive `flock` on FILE
while it runs, and its clock starts once it holds it (a shared machine).

`--emulate-avx2` limits PyTorch's kernels, oneDNN and MKL to AVX2 for both
(`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`, `MKL_ENABLE_INSTRUCTIONS`) and passes `--bf16 off`
to the flow, which is what its `auto` setting decides on a CPU without native bf16: a
stand-in for an AVX2-only machine, not the same thing; its record and report say
"emulated", and it is never the headline for a CPU kind measured for real.

    .venv/bin/python -m bench.speedup --data-dir ../shared/data/mrpc --seeds 42,43,44,45,46
    .venv/bin/python -m bench.speedup --merge a/speedup.json b/speedup.json   # seeds run apart
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench import report
from bench.common import RESULTS, run_flows, save
from bench.overhead import three_splits
from bench.training_speed import summarise
from tasks.config import PACKAGED_MODEL
from tasks.machine_recipe import use_bf16
from tasks.model import resolve_model
from tasks.uncertainty import seed_paired_difference

AVX2_ONLY = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
SCORES = ("test_accuracy", "test_f1", "validation_accuracy", "validation_f1")
FLOW_METRICS = ("train_samples_per_second", "train_seconds", *SCORES)
SUMMARISED = ("wall_seconds", "train_samples_per_second", *SCORES)
RECIPE = (
    "learning_rate", "batch_size", "num_epochs", "bf16", "group_by_length", "frozen_layers",
    "frozen_features_cached", "objective_metric",
)  # fmt: skip
SELECTION = "best epoch by validation f1 (load_best_model_at_end), both arms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="MRPC folder (required unless --merge)")
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--max-train-samples", type=int, help="a slice, for a smoke run")
    parser.add_argument("--emulate-avx2", action="store_true", help="see the module's doc")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--lock", type=Path, help="a file each process holds a flock on")
    parser.add_argument(
        "--bare-from",
        type=Path,
        help="a recorded speedup.json of this machine: its bare runs for these seeds are reused "
        "and only the flow runs (a screen of flow settings; its wall ratios span two runs)",
    )
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
        data = three_splits(args.data_dir, work / "data")
        tracking = f"sqlite:///{work}/mlflow.db"
        jobs = {}
        for seed in seeds:
            # fmt: off
            jobs[("bare", seed)] = None if args.bare_from else (
                "bench.bare_trainer",
                ["--data-dir", str(data), "--model", resolve_model(PACKAGED_MODEL),
                 "--seed", str(seed), "--result", str(work / f"bare-{seed}.json"),
                 "--select-epoch", "best", "--objective-metric", "f1", *slice_flags],
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
        jobs = {key: job for key, job in jobs.items() if job is not None}
        seconds = run_flows(jobs, work, parallel=False, lock=args.lock)
        if args.bare_from:
            recorded = json.loads(args.bare_from.read_text())["bare"]["runs"]
            bare = [run for run in recorded if run["seed"] in seeds]
        else:
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
            | {"chosen_epoch": chosen_epoch(client, runs[f"seed-{seed}"].info.run_id)}
            for seed in seeds
        ]
        recipe = {key: runs[f"seed-{seeds[0]}"].data.params.get(key) for key in RECIPE}
    results = {
        "settings": {
            "seeds": seeds,
            "max_train_samples": args.max_train_samples,
            "emulate_avx2": args.emulate_avx2,
            "flow_arguments": flow_extra,
            "bare_from": str(args.bare_from) if args.bare_from else None,
            "flow_recipe": recipe,
            "bf16_auto_here": use_bf16("auto"),
            "select_epoch": SELECTION,
            "scored_split": "test",
        },
        "bare": {"runs": bare, **summarise(bare, SUMMARISED)},
        "flow": {"runs": flow, **summarise(flow, SUMMARISED)},
    }
    results["paired"] = paired(bare, flow)
    name = "speedup_avx2" if args.emulate_avx2 else "speedup"
    show_and_save(f"{name}_smoke" if args.max_train_samples else name, results, args.results)


def chosen_epoch(client: MlflowClient, run_id: str) -> int | None:
    """The epoch the flow kept: the first with the highest validation F1 it logged per epoch
    (what `load_best_model_at_end` keeps), or None without that history."""
    history = sorted(client.get_metric_history(run_id, "eval_f1"), key=lambda m: m.step)
    if not history:
        return None
    return max(history, key=lambda metric: (metric.value, -metric.step)).step


def paired(bare: list[dict], flow: list[dict]) -> dict:
    """Seed by seed, flow - bare: each score's mean difference with its 95% t interval, and
    the wall-time ratio bare / flow per seed, their mean and the ratio of the mean walls."""
    by_seed = {run["seed"]: run for run in bare}
    pairs = [(by_seed[run["seed"]], run) for run in flow if run["seed"] in by_seed]
    differences = {}
    for key in SCORES:
        if all(key in b and key in f for b, f in pairs):
            found = seed_paired_difference([f[key] for _, f in pairs], [b[key] for b, _ in pairs])
            differences[key] = {
                "difference": found.difference,
                "low": found.low,
                "high": found.high,
                "seeds": found.seeds,
                "confidence": found.confidence,
            }
    ratios = {b["seed"]: b["wall_seconds"] / f["wall_seconds"] for b, f in pairs}
    return {
        "seeds": [b["seed"] for b, _ in pairs],
        "differences": differences,
        "wall_ratio_per_seed": ratios,
        "wall_ratio_mean_of_seeds": statistics.fmean(ratios.values()),
        "wall_ratio_of_means": statistics.fmean(b["wall_seconds"] for b, _ in pairs)
        / statistics.fmean(f["wall_seconds"] for _, f in pairs),
    }


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
    if all("test_accuracy" in run for run in results["bare"]["runs"]):
        results["paired"] = paired(results["bare"]["runs"], results["flow"]["runs"])
    show_and_save("speedup_avx2" if settings[0]["emulate_avx2"] else "speedup", results, folder)


def show_and_save(name: str, results: dict, folder: Path) -> None:
    """Saved first (with the machine), then shown as RESULTS.md will show it."""
    path = save(f"{name}.json", results, folder)
    print("\n".join(report.speedup(json.loads(path.read_text()))))


if __name__ == "__main__":
    main()
