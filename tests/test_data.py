"""Data loading: the real MRPC files, the three formats, and each bad input's message."""

import json
from pathlib import Path

import pytest
from conftest import BAD_INPUTS, TINY_TSV, bad_data_dir, write_split_files

from tasks.config import FineTuneConfig
from tasks.data import DataError, load_data


def load(folder: Path, **settings):
    return load_data(FineTuneConfig(data_dir=folder, **settings))


def test_real_mrpc_counts_and_labels(mrpc_dir):
    data = load(mrpc_dir)
    summary = data.summary()
    assert summary["train"] == {"rows": 3668, "0": 1194, "1": 2474}
    assert summary["validation"] == {"rows": 408, "0": 129, "1": 279}
    assert summary["test"] == {"rows": 1725, "0": 578, "1": 1147}
    assert data.has_pair and data.num_labels == 2
    assert len(data.fingerprint) == 64


def test_slices_change_the_fingerprint(mrpc_dir):
    full = load(mrpc_dir, max_train_samples=64, max_eval_samples=32)
    assert len(full.splits["train"]) == 64 and len(full.splits["test"]) == 32
    assert full.fingerprint != load(mrpc_dir, max_train_samples=65).fingerprint


def test_formats_give_the_same_content(tmp_path):
    tsv = load(write_split_files(tmp_path / "tsv", TINY_TSV))
    csv_text = {k: v.replace("\t", ",") for k, v in TINY_TSV.items()}
    csv = load(write_split_files(tmp_path / "csv", csv_text, ".csv"))
    jsonl_text = {}
    for split, text in TINY_TSV.items():
        header, *rows = [line.split("\t") for line in text.strip().split("\n")]
        jsonl_text[split] = "\n".join(
            json.dumps({**dict(zip(header, row, strict=True)), "label": int(row[2]), "idx": i})
            for i, row in enumerate(rows)
        )
    jsonl = load(write_split_files(tmp_path / "jsonl", jsonl_text, ".jsonl"))
    assert tsv.fingerprint == csv.fingerprint == jsonl.fingerprint


def test_string_labels_are_mapped_and_named(tmp_path):
    folder = write_split_files(
        tmp_path / "s",
        {
            "train": "text,label\ngood film,pos\nbad film,neg\nfine,pos\n",
            "dev": "text,label\nawful,neg\n",
        },
        ".csv",
    )
    data = load(folder, text_column="text")
    assert data.label_names == ["neg", "pos"]
    assert not data.has_pair
    assert data.splits["train"]["label"].tolist() == [1, 0, 1]
    assert data.splits["validation"]["label"].tolist() == [0]


def test_label_names_for_integer_labels(tiny_dir):
    data = load(tiny_dir, label_names=["different", "same"])
    assert data.label_names == ["different", "same"]


def test_unlabelled_test_split(tiny_dir):
    (tiny_dir / "test.tsv").write_text("sentence1\tsentence2\nx\ty\n")
    data = load(tiny_dir)
    assert not data.is_labelled("test")
    assert data.is_labelled("validation")


@pytest.mark.parametrize(("case", "change", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_named(tmp_path, case, change, message):
    with pytest.raises(DataError, match=message):
        load(bad_data_dir(tmp_path, change))


def test_non_utf8_text_is_refused(tiny_dir):
    (tiny_dir / "train.tsv").write_bytes(b"sentence1\tsentence2\tlabel\ncaf\xe9\tb\t1\nc\td\t0\n")
    with pytest.raises(DataError, match="not UTF-8 text \\(line 2"):
        load(tiny_dir)


def test_explicit_pair_column_must_exist(tiny_dir):
    with pytest.raises(DataError, match="other"):
        load(tiny_dir, text_pair_column="other")
