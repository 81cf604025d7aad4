"""Benchmark: the tokenization task with a cold cache, a warm one, and after changes.

Runs the pipeline's own `tasks.tokenization.tokenize` (what the flows call) on MRPC with
the packaged tokenizer: first in an empty cache (miss), again (hit), then with another
max length and with one training row changed (both must miss).

    .venv/bin/python -m bench.tokenization_cache --data-dir ../shared/data/mrpc
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from bench import report
from bench.common import RESULTS, save
from tasks import data, tokenization
from tasks.config import FineTuneConfig
from tasks.model import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    config = FineTuneConfig(data_dir=args.data_dir)
    dataset = data.load_data(config)
    tokenizer = tokenization.load_tokenizer(resolve_model(config.model_name_or_path))
    train = dataset.splits["train"].copy()
    train.loc[0, "text"] = train.loc[0, "text"] + " (edited)"
    edited = dataclasses.replace(dataset, splits={**dataset.splits, "train": train})
    edited = dataclasses.replace(edited, fingerprint=data.fingerprint(edited))
    cases = [
        ("first run", dataset, config.max_length),
        ("second run, same data and tokenizer", dataset, config.max_length),
        ("max length 64", dataset, 64),
        ("one train row edited", edited, config.max_length),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for case, loaded, max_length in cases:
            result = tokenization.tokenize(loaded, tokenizer, max_length, Path(cache))
            rows.append({"case": case, "seconds": result.seconds, "cache_hit": result.cache_hit})
    results = {"rows": {s: len(f) for s, f in dataset.splits.items()}, "cases": rows}
    print("\n".join(report.tokenization_cache(results)))
    save("tokenization_cache.json", results, args.results)


if __name__ == "__main__":
    main()
