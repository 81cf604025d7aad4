"""Benchmark: the fine-tune flow (Prefect + MLflow + model artifact) vs a bare Trainer script.

The flow runs as users start it, `finetrack fine-tune`, with Prefect's embedded server. Both
do the same work, back to back in one invocation with the same threads: the seed recipe
on MRPC train, evaluated on validation after every epoch, the same epoch kept by both (the
best by validation F1 of label 1, the flow's objective on MRPC: `bench.bare_trainer
--select-epoch best` saves a checkpoint every epoch and loads the best one at the end, as the
flow does), and both score that epoch on the test split (both get a folder with train,
validation and test), batches drawn at random in both (the flow's
`--group-by-length` is pinned off, its batch size and learning rate to the seed's, and
`--freeze-layers` to 0, so that the work is the same whatever its defaults), in
bf16 autocast in both where the flow's default (`--bf16 auto`) turns it on.
Each wall time is the whole process, from start to exit, model logging included; the
flow's own timings say where its extra time went. `--lock FILE`: each process holds an
exclusive `flock` on FILE while it runs (its clock starts once it has it), for a shared
machine.

    .venv/bin/python -m bench.overhead --data-dir ../shared/data/mrpc
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench import report
from bench.common import RESULTS, run_flows, save
from tasks.config import PACKAGED_MODEL
from tasks.machine_recipe import use_bf16
from tasks.model import resolve_model

FLOW_METRICS = (
    "train_seconds",
    "tokenize_seconds",
    "log_model_seconds",
    "train_samples_per_second",
    "validation_accuracy",
    "validation_f1",
    "test_accuracy",
    "test_f1",
)
SPLITS = ("train", "validation", "test")


def three_splits(data_dir: Path, folder: Path) -> Path:
    """A folder with links to train, validation and test (nothing else the data folder holds);
    test is required: every figure compared is a test-split figure."""
    missing = [split for split in SPLITS if not (data_dir / f"{split}.tsv").exists()]
    if missing:
        raise SystemExit(f"{data_dir} has no {', '.join(missing)} split: both arms score test")
    folder.mkdir()
    for split in SPLITS:
        (folder / f"{split}.tsv").symlink_to((data_dir / f"{split}.tsv").resolve())
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--max-train-samples", type=int, help="a slice, for a smoke run")
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--lock", type=Path, help="a file each process holds a flock on")
    args = parser.parse_args()
    slice_flags = ["--num-epochs", str(args.num_epochs)]
    bf16 = use_bf16("auto")  # the flow's default here; the bare script does the same
    if args.max_train_samples:
        slice_flags += ["--max-train-samples", str(args.max_train_samples)]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data = three_splits(args.data_dir, work / "data")
        model = resolve_model(PACKAGED_MODEL)
        jobs = {
            "bare": (
                "bench.bare_trainer",
                ["--data-dir", str(data), "--model", model, "--result", str(work / "bare.json"),
                 "--select-epoch", "best", "--objective-metric", "f1", *slice_flags,
                 *(["--bf16"] if bf16 else [])],
            ),
            "flow": (
                "flows.cli",  # the `finetrack` command
                ["fine-tune", "--data-dir", str(data),
                 "--tracking-uri", f"sqlite:///{work}/mlflow.db",
                 "--output-dir", str(work / "outputs"), "--cache-dir", str(work / "cache"),
                 "--experiment-name", "bench-overhead", "--group-by-length", "false",
                 "--batch-size", "8", "--learning-rate", "5e-5", "--freeze-layers", "0",
                 "--objective-metric", "f1", *slice_flags],
            ),
        }  # fmt: skip
        seconds = run_flows(jobs, work, parallel=False, lock=args.lock)
        bare = json.loads((work / "bare.json").read_text())
        client = MlflowClient(f"sqlite:///{work}/mlflow.db")
        experiment = client.get_experiment_by_name("bench-overhead")
        (run,) = client.search_runs([experiment.experiment_id])
        flow = {key: run.data.metrics[key] for key in FLOW_METRICS}
    results = {
        "bare": {"wall_seconds": seconds["bare"], **bare},
        "flow": {"wall_seconds": seconds["flow"], **flow},
        "ratio": seconds["flow"] / seconds["bare"],
        "settings": {
            "num_epochs": args.num_epochs,
            "max_train_samples": args.max_train_samples,
            "bf16": bf16,
            "select_epoch": "best by validation f1, both arms",
            "scored_split": "test",
        },
    }
    name = "overhead_smoke.json" if args.max_train_samples else "overhead.json"
    save(name, results, args.results)
    print("\n".join(report.overhead(results)))


if __name__ == "__main__":
    main()
