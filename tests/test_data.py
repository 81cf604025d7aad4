"""Data loading: the real MRPC files, the three formats, and each bad input's message."""

import json
from pathlib import Path

import pytest

from tasks.config import FineTuneConfig
from tasks.data import DataError, load_data
from tests.support.data import BAD_INPUTS, TINY_TSV, bad_data_dir, write_split_files


def load(folder: Path, **settings):
    return load_data(FineTuneConfig(data_dir=folder, **settings))


def test_real_mrpc_counts_and_labels(mrpc_dir):
    data = load(mrpc_dir)
    summary = data.summary()
    assert summary["train"] == {"rows": 3668, "0": 1194, "1": 2474}
    assert summary["validation"] == {"rows": 408, "0": 129, "1": 279}
    assert summary["test"] == {"rows": 1725, "0": 578, "1": 1147}
    assert data.summary_lines() == [
        "train: 3,668 rows (0: 1,194, 1: 2,474)",
        "validation: 408 rows (0: 129, 1: 279)",
        "test: 1,725 rows (0: 578, 1: 1,147)",
    ]
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


def test_labels_that_differ_only_in_case_are_refused_naming_them(tmp_path):
    rows = "".join(f"s{i},{label}\n" for i, label in enumerate(["Yes", "yes", "No", "no ", "x"]))
    folder = write_split_files(
        tmp_path / "case", {"train": "text,label\n" + rows, "dev": "text,label\nz,x\n"}, ".csv"
    )
    with pytest.raises(DataError) as error:
        load(folder, text_column="text")
    message = str(error.value)
    assert message == (
        f"{folder / 'train.csv'}: labels that differ only in case would train as separate "
        "classes: 'No' and 'no', 'Yes' and 'yes'; write each class one way"
    )


def test_summary_of_many_classes_is_one_short_line(tmp_path):
    labels = [f"class-{i:04d}" for i in range(1000)] * 2 + ["class-0007"] * 3
    train = "".join(f"t{i},{label}\n" for i, label in enumerate(labels))
    folder = write_split_files(
        tmp_path / "many",
        {"train": "text,label\n" + train, "dev": "text,label\nv,class-0001\nw,class-0002\n"},
        ".csv",
    )
    data = load(folder, text_column="text")
    assert data.num_labels == 1000
    assert data.summary_lines() == [
        "train: 2,003 rows, 1,000 classes, 2-5 rows each "
        "(class-0007: 5, class-0000: 2, class-0001: 2, … 997 more)",
        "validation: 2 rows (class-0001: 1, class-0002: 1)",
    ]
    data.splits["train"] = data.splits["train"].head(2000)
    assert data.summary_lines()[0] == "train: 2,000 rows, 1,000 classes, 2 rows each"
    data.splits["train"] = data.splits["train"].head(1000)
    assert data.summary_lines()[0] == "train: 1,000 rows, 1,000 classes, 1 row each"


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


HEADER = "sentence1\tsentence2\tlabel\n"


MISREAD = [
    ("empty label", HEADER + "a\tb\t0\nc\td\t\ne\tf\t1\n", r"empty label .*data row \[2\]"),
    (
        "one label not an integer",
        HEADER + "a\tb\t0\nc\td\t1\ne\tf\tN/A\n",
        r"\['N/A'\] in data row \[3\] are not integers",
    ),
    (
        "duplicated column",
        "idx\tlabel\tsentence1\tsentence1\n1\t0\ta\tb\n2\t1\tc\td\n",
        r"header line 1 repeats column\(s\) \['sentence1'\]",
    ),
    ("ragged row", HEADER + "a\tb\t0\nc\td\t1\textra\n", "line 3"),
]


@pytest.mark.parametrize(("case", "train", "message"), MISREAD, ids=[c[0] for c in MISREAD])
def test_misread_train_file_is_refused_naming_file_and_row(tiny_dir, case, train, message):
    (tiny_dir / "train.tsv").write_text(train, encoding="utf-8")
    with pytest.raises(DataError, match=message) as error:
        load(tiny_dir)
    assert str(tiny_dir / "train.tsv") in str(error.value)


def test_bad_jsonl_line_is_named(tmp_path):
    lines = [
        json.dumps({"sentence1": "a", "sentence2": "b", "label": 0}),
        json.dumps({"sentence1": "c", "sentence2": "d", "label": 1}),
        '{"sentence1": "e", "sentence2": "f", "label": 1',
    ]
    folder = write_split_files(
        tmp_path / "j", {"train": "\n".join(lines), "validation": lines[0]}, ".jsonl"
    )
    with pytest.raises(DataError, match=r"train.jsonl: line 3: not valid JSON"):
        load(folder)


def test_duplicated_jsonl_key_is_named(tmp_path):
    lines = ['{"sentence1": "a", "sentence2": "b", "label": 0, "label": 1}']
    folder = write_split_files(
        tmp_path / "j", {"train": lines[0], "validation": lines[0]}, ".jsonl"
    )
    with pytest.raises(DataError, match=r"line 1: key 'label' appears twice"):
        load(folder)


def test_data_dir_that_is_a_file_is_named_as_such(tiny_dir):
    with pytest.raises(DataError, match="is a file"):
        load(tiny_dir / "train.tsv")


def test_latin1_validation_file_names_the_line(tiny_dir):
    (tiny_dir / "validation.tsv").write_bytes(HEADER.encode() + b"a\tb\t1\ncaf\xe9\td\t0\n")
    with pytest.raises(DataError, match=r"validation.tsv: not UTF-8 text \(line 3"):
        load(tiny_dir)


def test_label_unseen_in_train_is_refused(tiny_dir):
    (tiny_dir / "validation.tsv").write_text(HEADER + "a\tb\t1\nc\td\t2\n")
    with pytest.raises(DataError, match=r"\['2'\] in data row \[2\] not an integer or outside"):
        load(tiny_dir)


def test_semicolon_csv_is_refused_with_its_columns(tmp_path):
    text = {s: "sentence1;sentence2;label\na;b;0\nc;d;1\n" for s in ("train", "validation")}
    folder = write_split_files(tmp_path / "semi", text, ".csv")
    with pytest.raises(DataError, match=r"missing column.*'sentence1;sentence2;label'"):
        load(folder)


def test_crlf_and_bom_are_read_as_plain_text(tmp_path):
    text = {s: "\ufeff" + TINY_TSV[s].replace("\n", "\r\n") for s in TINY_TSV}
    crlf = load(write_split_files(tmp_path / "crlf", text))
    plain = load(write_split_files(tmp_path / "plain", TINY_TSV))
    assert crlf.fingerprint == plain.fingerprint


def test_quoted_newline_in_csv_stays_in_its_cell(tmp_path):
    train = 'sentence1,sentence2,label\n"two\nlines",b,0\nc,d,1\n'
    folder = write_split_files(
        tmp_path / "q", {"train": train, "validation": "sentence1,sentence2,label\ne,f,1\n"}, ".csv"
    )
    data = load(folder)
    assert data.splits["train"]["text"].tolist() == ["two\nlines", "c"]


def test_float_labels_and_three_classes(tmp_path):
    floats = {
        s: TINY_TSV[s].replace("\t0\n", "\t0.0\n").replace("\t1\n", "\t1.0\n") for s in TINY_TSV
    }
    data = load(write_split_files(tmp_path / "f", floats))
    assert data.label_names == ["0.0", "1.0"]
    assert data.splits["train"]["label"].tolist() == [0, 1, 1]
    three = {"train": HEADER + "a\tb\t0\nc\td\t1\ne\tf\t2\n", "validation": HEADER + "g\th\t2\n"}
    data = load(write_split_files(tmp_path / "three", three))
    assert data.num_labels == 3 and data.splits["validation"]["label"].tolist() == [2]


def test_very_long_sentence_is_truncated(tmp_path):
    from tasks.model import resolve_model
    from tasks.tokenization import load_tokenizer, tokenize

    long = " ".join(["word"] * 10_000)
    splits = {
        "train": HEADER + f"{long}\tb\t0\nc\td\t1\n",
        "validation": HEADER + f"{long}\tf\t1\n",
    }
    data = load(write_split_files(tmp_path / "long", splits))
    tokenizer = load_tokenizer(resolve_model(FineTuneConfig().model_name_or_path))
    tokenized = tokenize(data, tokenizer, 128, tmp_path / "cache").datasets
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) == 128
