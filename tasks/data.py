"""Load a sentence / sentence-pair classification data set and refuse bad data early.

A local folder holds `train`, `validation` and optionally `test` files in TSV, CSV or
JSONL; online users may take a Hub data set instead. Whatever the source, the result is
one normalised frame per split (`text`, optional `text_pair`, integer `label`), the label
names, row and label counts, and a content fingerprint that is logged with the run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.config import FineTuneConfig
from tasks.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"validation": ("validation", "dev", "valid")}
FORMATS = (".tsv", ".csv", ".jsonl")
UNLABELLED = -1
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


def find_split_files(data_dir: Path) -> dict[str, Path]:
    """Map split name to its file; train and validation must exist, test is optional."""
    if data_dir.is_file():
        raise DataError(f"data folder {data_dir} is a file; pass the folder that holds it")
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    found: dict[str, Path] = {}
    for split in SPLITS:
        candidates = [
            data_dir / f"{stem}{suffix}"
            for stem in SPLIT_ALIASES.get(split, (split,))
            for suffix in FORMATS
        ]
        existing = [path for path in candidates if path.is_file()]
        if len(existing) > 1:
            raise DataError(f"several files for split {split!r}: {[str(p) for p in existing]}")
        if existing:
            found[split] = existing[0]
        elif split != "test":
            names = ", ".join(p.name for p in candidates)
            raise DataError(f"no {split} file in {data_dir} (looked for {names})")
    return found


def read_table(path: Path) -> pd.DataFrame:
    """Read one split as strings, keeping empty cells empty so that they can be reported."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (line {line}, byte {error.start})") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{path}: empty split (no rows)")
    if path.suffix == ".jsonl":
        frame = _read_jsonl(path, text)
    else:
        frame = _read_delimited(path, text, "\t" if path.suffix == ".tsv" else ",")
    if frame.empty:
        raise DataError(f"{path}: empty split (no rows)")
    return frame


def _read_delimited(path: Path, text: str, sep: str) -> pd.DataFrame:
    """CSV (quoted fields may span lines) or TSV (no quoting, as GLUE writes it)."""
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    header = next(csv.reader(io.StringIO(text), delimiter=sep, quoting=quoting))
    _refuse_duplicates(path, [name.strip() for name in header])
    try:
        return pd.read_csv(
            io.StringIO(text), sep=sep, quoting=quoting, dtype=str, keep_default_na=False
        )
    except (ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: cannot parse ({error})") from None


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    """One JSON object per line; a bad line is named by its number in the file."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_object_without_duplicates)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}: line {number}: not valid JSON ({error.msg} at column {error.colno})"
            ) from None
        except _DuplicateKey as error:
            raise DataError(f"{path}: line {number}: key {error} appears twice") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object, got {line[:40]!r}")
        rows.append(row)
    return pd.DataFrame(rows).astype("string").fillna("")


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _DuplicateKey(repr(key))
    return dict(pairs)


def _refuse_duplicates(path: Path, header: list[str]) -> None:
    """pandas would rename a repeated column (`a`, `a.1`) and use only one of them."""
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: header line 1 repeats column(s) {repeated}")


def resolve_columns(
    frames: dict[str, pd.DataFrame], config: FineTuneConfig, where: dict[str, str]
) -> list[str]:
    """The text columns to use; a missing required column is an error naming the file."""
    pair = config.text_pair_column
    optional = pair is not None and config.pair_column_is_default
    if optional and not all(pair in frame.columns for frame in frames.values()):
        pair = None
    columns = [config.text_column] + ([pair] if pair else [])
    for split, frame in frames.items():
        required = [*columns, config.label_column] if split != "test" else columns
        missing = [name for name in required if name not in frame.columns]
        if missing:
            raise DataError(
                f"{where[split]}: missing column(s) {missing}; it has {list(frame.columns)}"
            )
    return columns


def check_texts(frames: dict[str, pd.DataFrame], columns: list[str], where: dict[str, str]) -> None:
    """Every text cell must hold something besides white space."""
    for split, frame in frames.items():
        for column in columns:
            blank = frame[column].astype(str).str.strip() == ""
            if blank.any():
                raise DataError(
                    f"{where[split]}: {int(blank.sum())} empty text(s) in column {column!r} "
                    f"({_rows(blank)})"
                )


def _rows(mask: pd.Series) -> str:
    """'data rows [2, 7]' for the first few rows where `mask` holds (header not counted)."""
    rows = (mask[mask].index + 1).tolist()
    return f"data row{'s' if len(rows) > 1 else ''} {rows[:5]}{'...' if len(rows) > 5 else ''}"


def encode_labels(
    frames: dict[str, pd.DataFrame],
    label_column: str,
    label_names: list[str] | None,
    where: dict[str, str],
) -> tuple[dict[str, pd.Series], list[str]]:
    """Integer ids for every split's labels and the names in id order.

    Integer labels must be 0..K-1; string labels get ids in sorted order. A column that mixes
    the two, has an empty cell or text labels that differ only in case is refused: read
    either way it would invent a class. Labels are stripped of surrounding spaces. A test
    split without a label column, or with all labels -1 (GLUE's hidden test labels), is
    unlabelled. `where` names each split's file for the messages.
    """
    values = {
        split: frame[label_column].astype(str).str.strip()
        for split, frame in frames.items()
        if label_column in frame.columns
    }
    for split, column in values.items():
        blank = column == ""
        if blank.any() and not (split == "test" and blank.all()):
            raise DataError(f"{where[split]}: empty label in {label_column!r} ({_rows(blank)})")
    train = values["train"]
    is_int = train.map(_is_int)
    integer = bool(is_int.all())
    if is_int.any() and not integer:
        raise DataError(
            f"{where['train']}: label(s) {sorted(set(train[~is_int]))[:5]} in "
            f"{_rows(~is_int)} are not integers, while the other labels are"
        )
    if integer:
        train_ids = sorted({int(value) for value in train})
        if train_ids[0] < 0:
            raise DataError(f"{where['train']}: negative label {train_ids[0]} in {label_column!r}")
        names = label_names or [str(i) for i in range(train_ids[-1] + 1)]
        if train_ids[-1] >= len(names):
            raise DataError(
                f"{where['train']}: label {train_ids[-1]} outside the label set 0..{len(names) - 1}"
            )
        mapping = {str(i): i for i in range(len(names))}
    else:
        if label_names:
            raise DataError("label_names applies to integer labels; the train labels are text")
        names = sorted(set(train))
        _refuse_case_variants(names, where["train"])
        mapping = {name: i for i, name in enumerate(names)}
    if len(set(train)) < 2:
        raise DataError(
            f"{where['train']}: only one class ({sorted(set(train))}); need two or more"
        )

    encoded: dict[str, pd.Series] = {}
    for split, frame in frames.items():
        column = values.get(split)
        if column is None or (split == "test" and column.isin(["", str(UNLABELLED)]).all()):
            encoded[split] = pd.Series(UNLABELLED, index=frame.index, dtype="int64")
            continue
        if integer:
            column = column.map(lambda v: str(int(v)) if _is_int(v) else v)
        unknown = ~column.isin(list(mapping))
        if unknown.any():
            kind = "not an integer or " if integer else ""
            raise DataError(
                f"{where[split]}: label(s) {sorted(set(column[unknown]))[:5]} in "
                f"{_rows(unknown)} {kind}outside the label set {list(mapping)}"
            )
        encoded[split] = column.map(mapping).astype("int64")
    return encoded, names


def _refuse_case_variants(names: list[str], where: str) -> None:
    """`Yes` and `yes` would silently train as two classes, where a person means one."""
    spellings: dict[str, list[str]] = {}
    for name in names:
        spellings.setdefault(name.casefold(), []).append(name)
    clashes = [" and ".join(map(repr, same)) for same in spellings.values() if len(same) > 1]
    if clashes:
        raise DataError(
            f"{where}: labels that differ only in case would train as separate classes: "
            f"{', '.join(clashes[:5])}{', ...' if len(clashes) > 5 else ''}; "
            "write each class one way"
        )


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


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
