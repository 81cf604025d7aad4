"""Benchmark: the same Optuna study with and without pruning (same seed, same space).

Prints, for each pruner, the best validation F1, the epochs trained over all trials and the
wall time, side by side, and writes them to bench/results/search_pruning.json.

    .venv/bin/python bench/search_pruning.py --data-dir ../shared/data/mrpc            # full
    .venv/bin/python bench/search_pruning.py --data-dir ../shared/data/mrpc --smoke    # tiny
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

RESULTS = Path(__file__).parent / "results"


def run_study(data_dir: Path, workdir: Path, pruner: str, args: argparse.Namespace) -> dict:
    """One study in a fresh storage, as a user would start it; returns what it cost."""
    storage = f"sqlite:///{workdir}/optuna-{pruner}.db"
    command = [
        sys.executable, "-m", "flows.search",
        "--data-dir", str(data_dir),
        "--study-name", f"bench-{pruner}", "--storage", storage,
        "--tracking-uri", f"sqlite:///{workdir}/mlflow.db",
        "--experiment-name", "bench-search",
        "--output-dir", str(workdir / "outputs"), "--cache-dir", str(workdir / "cache"),
        "--n-trials", str(args.n_trials), "--pruner", pruner, "--finalize", "false",
        *(["--max-train-samples", "64", "--max-eval-samples", "32",
           "--num-epochs-range", "1,2"] if args.smoke else []),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name=f"bench-{pruner}", storage=storage)
    trials = study.get_trials(deepcopy=False)
    return {
        "pruner": pruner,
        "best_validation_f1": study.best_value,
        "best_params": study.best_params,
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "pruned_trials": sum(t.state == TrialState.PRUNED for t in trials),
        "wall_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--pruners", default="median,none")
    parser.add_argument("--smoke", action="store_true", help="tiny slice, 1-2 epochs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [run_study(args.data_dir, Path(folder), p, args) for p in args.pruners.split(",")]
    baseline = rows[-1]
    print(f"{'pruner':<10} {'best val F1':>11} {'epochs':>7} {'pruned':>7} {'wall s':>8}")
    for row in rows:
        print(
            f"{row['pruner']:<10} {row['best_validation_f1']:>11.4f} {row['epochs_trained']:>7}"
            f" {row['pruned_trials']:>7} {row['wall_seconds']:>8.1f}"
        )
    for row in rows[:-1]:
        print(
            f"{row['pruner']} vs {baseline['pruner']}: "
            f"F1 {100 * (row['best_validation_f1'] - baseline['best_validation_f1']):+.2f} points, "
            f"epochs {row['epochs_trained'] / baseline['epochs_trained']:.0%}, "
            f"wall {row['wall_seconds'] / baseline['wall_seconds']:.0%}"
        )
    RESULTS.mkdir(exist_ok=True)
    name = "search_pruning_smoke.json" if args.smoke else "search_pruning.json"
    (RESULTS / name).write_text(json.dumps({"n_trials": args.n_trials, "studies": rows}, indent=2))


if __name__ == "__main__":
    main()
