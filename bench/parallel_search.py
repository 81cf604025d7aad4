"""Benchmark: one study run by the search deployment with `parallelism` 1 and 2, back to back.

A local cluster (`tests.support.cluster`: Prefect server, three process workers with one run each,
SQLite study storage and MLflow store in a temporary folder); each study is started with
`prefect deployment run 'search/mrpc'` and timed until the run is final. Prints the wall
time, the trials finished, the epochs trained and what the record holds (MLflow runs left
RUNNING), side by side. With parallelism 2 each worker trains with half of the machine's
cores (`threads`): two workers with all cores each ran about 25 times slower per training step
here (thread oversubscription). Pruning is off and confirmation skipped
(`finalize` false) so that both do the same kind of work; TPE proposes from what has
finished, so parallel trials may draw other configurations (their epochs are printed).

    .venv/bin/python -m bench.parallel_search --data-dir ../shared/data/mrpc
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.common import save
from tasks import trial_lifecycle as lifecycle
from tests.support.cluster import prefect_server, run_deployment, workers

CORES = os.cpu_count() or 1


def study_config(args, work: Path, parallelism: int) -> dict:
    return {
        "study_name": f"p{parallelism}",
        "storage": f"sqlite:///{work}/optuna.db",
        "n_trials": args.n_trials,
        "num_epochs_range": {"low": 1, "high": 2},
        "pruner": "none",
        "parallelism": parallelism,
        "finalize": False,
        "train": {
            "data_dir": str(args.data_dir.resolve()),
            "max_train_samples": args.train_rows,
            "max_eval_samples": 200,
            "tracking_uri": f"sqlite:///{work}/mlflow.db",
            "experiment_name": f"parallel-{parallelism}",
            "output_dir": str(work / "checkpoints"),
            "cache_dir": str(work / "cache"),
            # the workers share this machine: each gets its share of the cores
            **({"threads": max(1, CORES // parallelism)} if parallelism > 1 else {}),
        },
    }


def summarise(work: Path, parallelism: int, seconds: float) -> dict:
    study = optuna.load_study(study_name=f"p{parallelism}", storage=f"sqlite:///{work}/optuna.db")
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name(f"parallel-{parallelism}")
    runs = client.search_runs([experiment.experiment_id])
    return {
        "parallelism": parallelism,
        "wall_seconds": round(seconds, 1),
        "finished_trials": len(study.get_trials(states=(TrialState.COMPLETE,))),
        "epochs_trained": sum(
            lifecycle.epochs_trained(t, lifecycle.reports_per_epoch(study)) for t in study.trials
        ),
        "best_value": study.best_value,
        "mlflow_runs": len(runs),
        "mlflow_runs_left_running": sum(r.info.status == "RUNNING" for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n-trials", type=int, default=6)
    parser.add_argument("--train-rows", type=int, default=400, help="MRPC train slice")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with prefect_server(work / "prefect") as env, workers(env, work, 3):
            for parallelism in (1, 2):
                started = time.perf_counter()
                run = run_deployment(env, "search/mrpc", study_config(args, work, parallelism))
                output, _ = run.communicate()
                if run.returncode != 0 or "Completed" not in output:
                    raise RuntimeError(output[-3000:])
                rows.append(summarise(work, parallelism, time.perf_counter() - started))
    for row in rows:
        print(
            f"parallelism {row['parallelism']}: {row['wall_seconds']:7.1f} s, "
            f"{row['finished_trials']} trials finished, {row['epochs_trained']} epochs, best "
            f"{row['best_value']:.4f}, {row['mlflow_runs']} MLflow runs "
            f"({row['mlflow_runs_left_running']} left RUNNING)"
        )
    print(f"speed-up: {rows[0]['wall_seconds'] / rows[1]['wall_seconds']:.2f}x")
    save("parallel_search.json", {"settings": vars(args) | {"data_dir": str(args.data_dir)},
                                  "studies": rows})  # fmt: skip


if __name__ == "__main__":
    main()
