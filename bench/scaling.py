"""Benchmark: training and tokenization time at 25%, 50% and 100% of MRPC train.

One epoch per size through the fine-tune flow (no model logged), each with a cold
tokenization cache; the times come from the run's MLflow metrics. Tokenization covers
validation and test too, a constant part that does not grow with the train slice.

    .venv/bin/python -m bench.scaling --data-dir ../shared/data/mrpc
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from bench import report
from bench.common import RESULTS, run_flows, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fractions", default="0.25,0.5,1.0")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = len(pd.read_csv(args.data_dir / "train.tsv", sep="\t", quoting=3))
    sizes = {float(f): max(1, round(float(f) * rows)) for f in args.fractions.split(",")}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        uri = f"sqlite:///{work}/mlflow.db"
        jobs = {
            fraction: (
                "flows.fine_tune",
                ["--data-dir", str(args.data_dir), "--max-train-samples", str(size),
                 "--num-epochs", "1", "--log-model", "false", "--tracking-uri", uri,
                 "--experiment-name", "bench-scaling", "--run-name", f"train-{size}",
                 "--output-dir", str(work / "outputs"), "--cache-dir", str(work / "cache")],
            )
            for fraction, size in sizes.items()
        }  # fmt: skip
        seconds = run_flows(jobs, work, parallel=False)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("bench-scaling")
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        measured = []
        for fraction, size in sizes.items():
            metrics = runs[f"train-{size}"].data.metrics
            measured.append(
                {
                    "fraction": fraction,
                    "train_rows": size,
                    "train_seconds": metrics["train_seconds"],
                    "tokenize_seconds": metrics["tokenize_seconds"],
                    "wall_seconds": seconds[fraction],
                }
            )
    results = {"epochs": 1, "sizes": measured}
    print("\n".join(report.scaling(results)))
    save("scaling.json", results, args.results)


if __name__ == "__main__":
    main()
