"""Read the split files of a local data folder: which file holds which split, and each file
as a frame of strings, refused with its file and line named when it cannot be read as it
means (not UTF-8, empty, unparsable, a repeated column or JSON key)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from tasks.errors import DataError

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"validation": ("validation", "dev", "valid")}
FORMATS = (".tsv", ".csv", ".jsonl")


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
