"""Shared fixtures: offline settings, the real MRPC files, small hand-made data sets."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mrpc_dir() -> Path:
    """Real GLUE MRPC (train 3668 / validation 408 / test 1725), never copied into the repo."""
    path = Path(os.environ.get("FINETRACK_MRPC_DIR", ROOT.parent / "shared" / "data" / "mrpc"))
    if not (path / "train.tsv").is_file():
        pytest.fail(f"MRPC not found at {path}; set FINETRACK_MRPC_DIR")
    return path


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


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    """A three-row pair data set in TSV with integer labels."""
    return write_split_files(tmp_path / "tiny", TINY_TSV)


def small_train_config(data_dir: Path, tmp_path: Path, **settings):
    """A FineTuneConfig on a slice of `data_dir` with every output under `tmp_path`."""
    from tasks.config import FineTuneConfig

    values = {
        "data_dir": data_dir,
        "max_train_samples": 64,
        "max_eval_samples": 32,
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "output_dir": tmp_path / "outputs",
        "cache_dir": tmp_path / "cache",
        **settings,
    }
    return FineTuneConfig(**values)
