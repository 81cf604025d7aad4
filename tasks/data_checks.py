"""Check the raw split frames before they become training data: the text and label
columns are there, no text is empty, and the labels make one label set (integer ids
0..K-1, or text labels given ids in sorted order). Every refusal names the file and rows."""

from __future__ import annotations

import pandas as pd

from tasks.config import FineTuneConfig
from tasks.errors import DataError

UNLABELLED = -1


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
