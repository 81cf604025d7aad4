"""Benchmark: the promotion test on full MRPC, the default recipe with two seeds.

Seed 42 is trained and registered first (it becomes champion), then seed 43 as the
challenger; what the gate decided, with its interval and McNemar's test, is printed. Two
seeds of one recipe differ only by noise, so a sound gate keeps the champion.

    .venv/bin/python -m bench.promotion --data-dir ../shared/data/mrpc
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.common import RESULTS, run_flows, save

NAME = "promotion-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seeds", default="42,43", help="champion,challenger")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    champion, challenger = args.seeds.split(",")
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        common = ["--data-dir", str(args.data_dir), "--tracking-uri", uri,
                  "--registered-model-name", NAME, "--output-dir", f"{folder}/out",
                  "--cache-dir", f"{folder}/cache", "--experiment-name", "promotion"]  # fmt: skip
        jobs = {
            f"seed {seed}": ("flows.fine_tune", [*common, "--seed", seed])
            for seed in (champion, challenger)
        }
        seconds = run_flows(jobs, Path(folder), parallel=False)
        client = MlflowClient(uri)
        version = client.get_model_version(NAME, "2")
        run = client.get_run(version.run_id)
        promotion = {k: v for k, v in run.data.metrics.items() if k.startswith("promotion_")}
        tags = {k: v for k, v in run.data.tags.items() if k.startswith("finetrack.promotion.")}
        heldout = {
            f"seed {seed}": {
                k: v
                for k, v in client.get_run(
                    client.get_model_version(NAME, number).run_id
                ).data.metrics.items()
                if k.startswith(("validation_", "test_")) and "ece" not in k
            }
            for seed, number in ((champion, "1"), (challenger, "2"))
        }
    results = {
        "seeds": {"champion": champion, "challenger": challenger},
        "wall_seconds": seconds,
        "decision": version.description,
        "promotion_metrics": promotion,
        "promotion_tags": tags,
        "heldout": heldout,
    }
    print(version.description)
    save("promotion.json", results, args.results)


if __name__ == "__main__":
    main()
