"""Benchmark: the seed recipe vs the tuned hyperparameters, over several seeds.

MRPC scores move by points between seeds, so each recipe is trained with every seed and
reported as mean ± standard deviation of accuracy and F1 on validation (408) and test
(1725). The tuned recipe is the best trial of a `bench.search_pruning` result.

    .venv/bin/python -m bench.quality --data-dir ../shared/data/mrpc \
        --tuned-from bench/results/search_pruning.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench import report
from bench.common import RESULTS, run_flows, save

SEED_RECIPE = {"learning_rate": 5e-5, "batch_size": 8, "num_epochs": 3}
REFERENCE = "bert-base-cased, course chapter: validation accuracy 0.8456, F1 0.8912"


def tuned_recipe(results: Path, pruner: str) -> dict:
    """The best params of the study that used `pruner`, over the seed recipe's defaults."""
    studies = json.loads(results.read_text())["studies"]
    (study,) = [s for s in studies if s["pruner"] == pruner]
    return {**SEED_RECIPE, **study["best_params"]}


def run_command(
    data_dir: Path, workdir: Path, name: str, recipe: dict, seed: int, extra
) -> list[str]:
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in recipe.items()]
    return [
        "--data-dir", str(data_dir), *flags, "--seed", str(seed), "--log-model", "false",
        "--tracking-uri", f"sqlite:///{workdir}/mlflow-{name}-{seed}.db",
        "--experiment-name", "bench-quality", "--run-name", f"{name}-seed{seed}",
        "--output-dir", str(workdir / f"outputs-{name}-{seed}"),
        "--cache-dir", str(workdir / "cache"),
        *extra,
    ]  # fmt: skip


def read_metrics(workdir: Path, name: str, seed: int) -> dict:
    client = MlflowClient(f"sqlite:///{workdir}/mlflow-{name}-{seed}.db")
    experiment = client.get_experiment_by_name("bench-quality")
    (run,) = client.search_runs([experiment.experiment_id])
    return {key: run.data.metrics[key] for key in (*report.METRICS, "train_samples_per_second")}


def summarise(name: str, recipe: dict, runs: list[dict]) -> dict:
    stats = {}
    for key in report.METRICS:
        values = [run[key] for run in runs]
        stats[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values)}
    return {"recipe": name, "params": recipe, "runs": runs, **stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--tuned-from", type=Path, required=True, help="a search_pruning JSON")
    parser.add_argument("--tuned-pruner", default="median", help="whose best trial is tuned")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--parallel", action="store_true", help="train all runs at once")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("extra", nargs="*", help="after --: more flags for every run")
    args = parser.parse_args()
    recipes = {"seed": SEED_RECIPE, "tuned": tuned_recipe(args.tuned_from, args.tuned_pruner)}
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        jobs = {
            (name, seed): (
                "flows.fine_tune",
                run_command(args.data_dir, workdir, name, recipes[name], seed, args.extra),
            )
            for name in recipes
            for seed in seeds
        }
        seconds = run_flows(jobs, workdir, args.parallel)
        rows = [
            summarise(
                name,
                recipe,
                [
                    {
                        "seed": s,
                        "wall_seconds": seconds[(name, s)],
                        **read_metrics(workdir, name, s),
                    }
                    for s in seeds
                ],
            )
            for name, recipe in recipes.items()
        ]
    results = {"reference": REFERENCE, "recipes": rows}
    print("\n".join(report.quality(results)))
    save("quality.json", results, args.results)


if __name__ == "__main__":
    main()
