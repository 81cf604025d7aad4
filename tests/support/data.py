"""Small hand-made data sets, bad inputs, and the small fine-tune config on an MRPC slice."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_EMPTY_STORE: list[Path] = []  # the migrated empty MLflow store, once made


def write_split_files(folder: Path, splits: dict[str, str], suffix: str = ".tsv") -> Path:
    """Write raw text per split (train/validation/test) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in splits.items():
        (folder / f"{split}{suffix}").write_text(text, encoding="utf-8")
    return folder


TINY_TSV = {
    "train": "sentence1\tsentence2\tlabel\na b\tc d\t0\ne f\tg h\t1\ni j\tk l\t1\n",
    "validation": "sentence1\tsentence2\tlabel\nm n\to p\t1\nq r\ts t\t0\n",
}


# Bad data sets: (case, {split: text, or None to delete the file}, expected message).
BAD_INPUTS = [
    ("missing folder", None, "data folder not found"),
    ("no validation", {"validation": None}, "no validation file"),
    ("empty split", {"validation": ""}, "empty split"),
    ("header only", {"validation": "sentence1\tsentence2\tlabel\n"}, "empty"),
    (
        "missing label",
        {"train": "sentence1\tsentence2\na\tb\n"},
        r"missing column\(s\) \['label'\]",
    ),
    ("missing sentence1", {"validation": "s\tsentence2\tlabel\na\tb\t1\n"}, "sentence1"),
    ("label outside set", {"validation": "sentence1\tsentence2\tlabel\na\tb\t7\n"}, "outside"),
    ("label not integer", {"validation": "sentence1\tsentence2\tlabel\na\tb\tyes\n"}, "integer"),
    ("one class", {"train": "sentence1\tsentence2\tlabel\na\tb\t1\nc\td\t1\n"}, "one class"),
    ("empty text", {"train": "sentence1\tsentence2\tlabel\na\t \t1\nc\td\t0\n"}, "empty text"),
]


def bad_data_dir(tmp_path: Path, change: dict[str, str | None] | None) -> Path:
    """TINY_TSV with `change` applied; `None` as the change: a folder that does not exist."""
    folder = tmp_path / "bad"
    if change is not None:
        write_split_files(folder, TINY_TSV)
        for split, text in change.items():
            if text is None:
                (folder / f"{split}.tsv").unlink()
            else:
                (folder / f"{split}.tsv").write_text(text, encoding="utf-8")
    return folder


def tracking_store(folder: Path) -> str:
    """`sqlite:///<folder>/mlflow.db`, an empty MLflow store unless one is there already.

    A new SQLite store runs MLflow's schema migrations (about 3 s); the suite runs them once,
    into a file of its own, and copies that file for each store a test starts empty."""
    db = folder / "mlflow.db"
    if not db.exists():
        if not _EMPTY_STORE:
            from mlflow.tracking import MlflowClient

            empty = Path(tempfile.mkdtemp(prefix="finetrack-empty-store-")) / "mlflow.db"
            MlflowClient(f"sqlite:///{empty}").search_experiments()  # creates and migrates it
            _EMPTY_STORE.append(empty)
        folder.mkdir(parents=True, exist_ok=True)
        source, copy = sqlite3.connect(_EMPTY_STORE[0]), sqlite3.connect(db)
        try:
            source.backup(copy)  # a consistent copy, even with MLflow's pool still open
        finally:
            source.close()
            copy.close()
    return f"sqlite:///{db}"


def small_train_config(data_dir: Path, tmp_path: Path, **settings):
    """A FineTuneConfig on a slice of `data_dir` with every output under `tmp_path`."""
    from tasks.config import FineTuneConfig

    values = {
        "data_dir": data_dir,
        "max_train_samples": 64,
        # more rows than one evaluation batch, in batches that do not divide them (16+16+8)
        "max_eval_samples": 40,
        "eval_batch_size": 16,
        "output_dir": tmp_path / "outputs",
        "cache_dir": tmp_path / "cache",
        **settings,
    }
    if "tracking_uri" not in values:
        values["tracking_uri"] = tracking_store(tmp_path)
    return FineTuneConfig(**values)
