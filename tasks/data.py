"""Load a sentence / sentence-pair classification data set and refuse bad data early.

A local folder holds `train`, `validation` and optionally `test` files in TSV, CSV or
JSONL; online users may take a Hub data set instead. Whatever the source, the result is
one normalised frame per split (`text`, optional `text_pair`, integer `label`), the label
names, row and label counts, and a content fingerprint that is logged with the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.config import FineTuneConfig
from tasks.data_checks import UNLABELLED, check_texts, encode_labels, resolve_columns
from tasks.data_files import SPLITS, find_split_files, read_table
from tasks.errors import DataError

log = logging.getLogger(__name__)

LISTED_CLASSES = 10  # a split's summary names the rows of each class up to this many


@dataclass
class LoadedData:
    """Validated splits in a common shape, ready for tokenization."""

    splits: dict[str, pd.DataFrame]
    label_names: list[str]
    source: str
    has_pair: bool
    fingerprint: str = ""
    files: dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def is_labelled(self, split: str) -> bool:
        return split in self.splits and bool((self.splits[split]["label"] != UNLABELLED).all())

    def summary(self) -> dict[str, dict[str, int]]:
        """Rows and rows per label name for every split."""
        result = {}
        for name, frame in self.splits.items():
            counts = {"rows": len(frame)}
            if self.is_labelled(name):
                for label_id, count in frame["label"].value_counts().sort_index().items():
                    counts[self.label_names[int(label_id)]] = int(count)
            result[name] = counts
        return result

    def summary_lines(self) -> list[str]:
        """One line per split as a person reads it: `train: 3,668 rows (0: 1,194, 1: 2,474)`.
        Beyond LISTED_CLASSES classes the line gives their count, the rows per class and the
        largest three, so that a thousand classes still make one short line."""

        def named(counts: pd.Series) -> str:
            return ", ".join(f"{self.label_names[int(i)]}: {n:,}" for i, n in counts.items())

        lines = []
        for split, frame in self.splits.items():
            line = f"{split}: {len(frame):,} rows"
            if not self.is_labelled(split):
                lines.append(f"{line} (unlabelled)")
                continue
            counts = frame["label"].value_counts().sort_index()
            if len(counts) <= LISTED_CLASSES:
                lines.append(f"{line} ({named(counts)})")
                continue
            low, high = int(counts.min()), int(counts.max())
            line += f", {len(counts):,} classes, "
            if low == high:
                lines.append(f"{line}{low:,} row{'s' if low > 1 else ''} each")
                continue
            top = counts.sort_values(ascending=False, kind="stable")[:3]
            largest = f"{named(top)}, … {len(counts) - 3:,} more"
            lines.append(f"{line}{low:,}-{high:,} rows each ({largest})")
        return lines


def normalise(
    frames: dict[str, pd.DataFrame],
    config: FineTuneConfig,
    source: str,
    files: dict[str, str] | None = None,
) -> LoadedData:
    """Validate raw split frames and bring them to the common text/text_pair/label shape."""
    where = {split: (files or {}).get(split, f"{split} split") for split in frames}
    for split, frame in frames.items():
        if frame.empty:
            raise DataError(f"{where[split]}: empty (no rows)")
    columns = resolve_columns(frames, config, where)
    check_texts(frames, columns, where)
    labels, names = encode_labels(frames, config.label_column, config.label_names, where)
    limits = {"train": config.max_train_samples}
    splits = {}
    for split, frame in frames.items():
        out = pd.DataFrame({"text": frame[columns[0]].astype(str)})
        if len(columns) > 1:
            out["text_pair"] = frame[columns[1]].astype(str)
        out["label"] = labels[split]
        limit = limits.get(split, config.max_eval_samples)
        splits[split] = out.head(limit).reset_index(drop=True) if limit else out
    data = LoadedData(
        splits=splits,
        label_names=names,
        source=source,
        has_pair=len(columns) > 1,
        files=dict(files or {}),
    )
    data.fingerprint = fingerprint(data)
    return data


def fingerprint(data: LoadedData) -> str:
    """SHA-256 of the normalised content: same rows and labels give the same print."""
    digest = hashlib.sha256()
    digest.update(json.dumps(data.label_names).encode())
    for split in sorted(data.splits):
        digest.update(split.encode())
        digest.update(data.splits[split].to_csv(index=False, sep="\t").encode("utf-8"))
    return digest.hexdigest()


def load_local(config: FineTuneConfig) -> LoadedData:
    """Read and validate the split files of a local folder."""
    assert config.data_dir is not None
    files = find_split_files(Path(config.data_dir))
    frames = {split: read_table(path) for split, path in files.items()}
    resolved = {split: str(path.resolve()) for split, path in files.items()}
    return normalise(frames, config, str(Path(config.data_dir).resolve()), resolved)


def load_hub(config: FineTuneConfig) -> LoadedData:
    """Download a Hub data set (e.g. glue/mrpc) with `datasets` and validate it."""
    import datasets

    name, _, subset = config.hub_dataset.partition("/")
    try:
        raw = datasets.load_dataset(name, subset or None)
    except Exception as error:
        raise DataError(
            f"cannot load Hub data set {config.hub_dataset!r} ({type(error).__name__}: {error}); "
            "offline, pass a local folder with --data-dir"
        ) from None
    frames = {}
    for split in SPLITS:
        if split in raw:
            frames[split] = raw[split].to_pandas().astype({config.label_column: str})
    if "train" not in frames or "validation" not in frames:
        raise DataError(f"Hub data set {config.hub_dataset!r} lacks a train or validation split")
    label_feature = raw["train"].features.get(config.label_column)
    names = getattr(label_feature, "names", None)
    if names and config.label_names is None:
        config = config.with_settings(label_names=list(names))
    return normalise(frames, config, source=f"hf://datasets/{config.hub_dataset}")


def load_data(config: FineTuneConfig) -> LoadedData:
    """Load and validate the configured data; log rows and label counts per split."""
    data = load_local(config) if config.data_dir is not None else load_hub(config)
    for line in data.summary_lines():
        log.info("%s", line)
    log.info("data fingerprint %s (%s)", data.fingerprint[:12], data.source)
    return data
