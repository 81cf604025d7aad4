"""Benchmark: what changes the bits of a re-run (README, "Reproducing a run").

One tiny training (64 MRPC train rows at batch 8, one epoch: 8 steps; 40 validation and 40
test rows) runs twice per variant, each time in a fresh process, and every validation and
test probability is compared: between the two processes of a variant (is a re-run
identical?) and between variants (how far does a thread count, the CPU's kernels or the
precision move them, and does a label change?). Variants: fp32 with the frozen layers'
outputs kept (what `auto` trains on every CPU), fp32 with every weight trained, bf16
autocast (`--bf16 on`, refused where the CPU would emulate it), each setting at 2 threads;
fp32 and bf16 at 1 thread; fp32 on AVX2 kernels (`bench.speedup.AVX2_ONLY`, a stand-in for
an AVX2-only CPU).

    .venv/bin/python -m bench.determinism --data-dir ../shared/data/mrpc
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import RESULTS, save
from bench.speedup import AVX2_ONLY

VARIANTS: dict[str, tuple[dict[str, object], dict[str, str]]] = {
    "fp32": ({"bf16": "off", "threads": 2}, {}),
    "fp32, every weight trained": ({"bf16": "off", "threads": 2, "freeze_layers": 0}, {}),
    "fp32, 1 thread": ({"bf16": "off", "threads": 1}, {}),
    "fp32, AVX2 kernels": ({"bf16": "off", "threads": 2}, AVX2_ONLY),
    "bf16": ({"bf16": "on", "threads": 2}, {}),
    "bf16, 1 thread": ({"bf16": "on", "threads": 1}, {}),
}
COMPARED = (
    ("fp32", "fp32, 1 thread"),
    ("fp32", "fp32, AVX2 kernels"),
    ("bf16", "bf16, 1 thread"),
    ("fp32, every weight trained", "bf16"),  # the precision alone
    ("fp32", "bf16"),  # what `auto` trains on a CPU, and `--bf16 on`
)


def probabilities(data_dir: Path, variant: str, work: Path) -> np.ndarray:
    """Train the variant's recipe once in this process; validation and test probabilities."""
    from tasks.config import FineTuneConfig
    from tasks.data import load_data
    from tasks.evaluation import evaluate_model
    from tasks.model import resolve_model
    from tasks.objective import resolve_objective, scoring
    from tasks.tokenization import load_tokenizer, tokenize
    from tasks.train import train

    settings, _ = VARIANTS[variant]
    config = FineTuneConfig(
        data_dir=data_dir, max_train_samples=64, max_eval_samples=40, batch_size=8,
        eval_batch_size=16, num_epochs=1, output_dir=work / "out", cache_dir=work / "cache",
        **settings,
    )  # fmt: skip
    data = load_data(config)
    config = resolve_objective(config, data.label_names)
    model_path = resolve_model(config.model_name_or_path)
    tokenizer = load_tokenizer(model_path)
    datasets = tokenize(data, tokenizer, config.max_length, config.cache_dir).datasets
    result = train(config, model_path, tokenizer, datasets, data.label_names, config.output_dir)
    scored = evaluate_model(result.trainer, datasets, data, scoring(config, data.label_names))
    return np.concatenate([scored[split].probabilities for split in ("validation", "test")])


def run_twice(data_dir: Path, variant: str, work: Path) -> list[np.ndarray]:
    """The variant in two fresh processes (its environment, e.g. AVX2 kernels, set first)."""
    runs = []
    for attempt in (1, 2):
        out = work / f"{variant.replace(' ', '_').replace(',', '')}-{attempt}.npy"
        command = [sys.executable, "-m", "bench.determinism", "--data-dir", str(data_dir)]
        env = {**os.environ, **VARIANTS[variant][1]}
        subprocess.run([*command, "--variant", variant, "--out", str(out)], check=True, env=env)
        runs.append(np.load(out))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="MRPC folder")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.variant:
            np.save(args.out, probabilities(args.data_dir, args.variant, Path(folder)))
            return
        runs = {name: run_twice(args.data_dir, name, Path(folder)) for name in VARIANTS}
    repeats = {
        name: {"identical": bool(np.array_equal(a, b)), "largest": float(np.abs(a - b).max())}
        for name, (a, b) in runs.items()
    }
    between = []
    for left, right in COMPARED:
        a, b = runs[left][0], runs[right][0]
        labels = int((a.argmax(-1) != b.argmax(-1)).sum())
        between.append({"variants": [left, right], "largest": float(np.abs(a - b).max()),
                        "labels_changed": labels, "rows": len(a)})  # fmt: skip
    for name, repeat in repeats.items():
        print(f"{name}: re-run identical {repeat['identical']} (largest {repeat['largest']:.2g})")
    for row in between:
        left, right = row["variants"]
        print(f"{left} against {right}: probabilities within {row['largest']:.2g}, "
              f"{row['labels_changed']} of {row['rows']} labels changed")  # fmt: skip
    save("determinism.json", {"repeats": repeats, "between": between}, args.results)


if __name__ == "__main__":
    main()
