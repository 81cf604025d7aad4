"""Benchmark: the same Optuna study with and without pruning (same seed, same space).

Prints, for each pruner, the best validation F1, the epochs trained over all trials and the
wall time, side by side, and writes them to bench/results/search_pruning.json. A pruner
named `median/1` is the median pruner with one report per epoch (`--reports-per-epoch 1`);
a bare name reports at the search's default, twice an epoch. Epochs trained count up to
each trial's last report, so a trial pruned half-way through an epoch adds 0.5. Arguments
after `--` go to every study's command line (e.g. `-- --model-name-or-path DIR`).

    .venv/bin/python bench/search_pruning.py --data-dir ../shared/data/mrpc            # full
    .venv/bin/python bench/search_pruning.py --data-dir ../shared/data/mrpc --smoke    # tiny

`--parallel` runs the studies at the same time (for a GPU with room to spare); their wall
times then share the machine, so compare epochs trained rather than seconds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

from bench import report
from bench.common import RESULTS, run_flows, save
from tasks import trial_lifecycle as lifecycle

SMOKE = ["--max-train-samples", "64", "--max-eval-samples", "32", "--num-epochs-range", "1,2"]


def slug(variant: str) -> str:
    return variant.replace("/", "-")


def study_command(data_dir: Path, workdir: Path, variant: str, args) -> list[str]:
    pruner, _, per_epoch = variant.partition("/")
    name = slug(variant)
    return [
        "--data-dir", str(data_dir),
        "--study-name", f"bench-{name}", "--storage", f"sqlite:///{workdir}/optuna-{name}.db",
        "--tracking-uri", f"sqlite:///{workdir}/mlflow-{name}.db",
        "--experiment-name", "bench-search",
        "--output-dir", str(workdir / f"outputs-{name}"), "--cache-dir", str(workdir / "cache"),
        "--n-trials", str(args.n_trials), "--pruner", pruner, "--finalize", "false",
        *(["--reports-per-epoch", per_epoch] if per_epoch else []),
        *(SMOKE if args.smoke else []), *args.extra,
    ]  # fmt: skip


def summarise(workdir: Path, variant: str, seconds: float) -> dict:
    name = slug(variant)
    study = optuna.load_study(
        study_name=f"bench-{name}", storage=f"sqlite:///{workdir}/optuna-{name}.db"
    )
    per_epoch = lifecycle.reports_per_epoch(study)
    trials = study.get_trials(deepcopy=False)
    return {
        "pruner": variant,
        "reports_per_epoch": per_epoch,
        "best_validation_f1": study.best_value,
        "best_params": study.best_params,
        "epochs_trained": sum(lifecycle.epochs_trained(t, per_epoch) for t in trials),
        "pruned_trials": sum(t.state == TrialState.PRUNED for t in trials),
        "wall_seconds": seconds,
        "trials": [
            {
                "number": t.number,
                "params": t.params,
                "state": t.state.name,
                "f1_per_report": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
            }
            for t in trials
        ],
    }


def run_studies(args, workdir: Path) -> list[dict]:
    pruners = args.pruners.split(",")
    jobs = {p: ("flows.search", study_command(args.data_dir, workdir, p, args)) for p in pruners}
    seconds = run_flows(jobs, workdir, args.parallel)
    return [summarise(workdir, p, seconds[p]) for p in pruners]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument(
        "--pruners", default="median-latest,median,asha,none", help="the last is the baseline"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny slice, 1-2 epochs")
    parser.add_argument("--parallel", action="store_true", help="run the studies at once")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("extra", nargs="*", help="after --: more flags for every study")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = run_studies(args, Path(folder))
    results = {
        "n_trials": args.n_trials,
        "parallel": args.parallel,
        "arguments": [*(SMOKE if args.smoke else []), *args.extra],
        "studies": rows,
    }
    print("\n".join(report.search_pruning(results)))
    save(
        "search_pruning_smoke.json" if args.smoke else "search_pruning.json", results, args.results
    )


if __name__ == "__main__":
    main()
