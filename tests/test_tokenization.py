"""Tokenization cache: a second run loads, a change of data or max length misses."""

import pytest

from tasks.config import PACKAGED_MODEL, FineTuneConfig
from tasks.data import load_data
from tasks.model import resolve_model
from tasks.tokenization import by_length, load_tokenizer, tokenize


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model(PACKAGED_MODEL))


def slice_of(mrpc_dir, rows):
    return load_data(FineTuneConfig(data_dir=mrpc_dir, max_train_samples=rows, max_eval_samples=8))


def test_second_run_hits_the_cache(mrpc_dir, tokenizer, tmp_path):
    data = slice_of(mrpc_dir, 32)
    first = tokenize(data, tokenizer, 64, tmp_path)
    second = tokenize(data, tokenizer, 64, tmp_path)
    assert not first.cache_hit and second.cache_hit
    assert first.cache_key == second.cache_key
    assert second.datasets["train"]["input_ids"] == first.datasets["train"]["input_ids"]
    assert len(second.datasets["train"]) == 32
    assert [p.name for p in tmp_path.iterdir()] == [first.cache_key]


def test_changes_miss_the_cache(mrpc_dir, tokenizer, tmp_path):
    data = slice_of(mrpc_dir, 32)
    base = tokenize(data, tokenizer, 64, tmp_path)
    shorter = tokenize(data, tokenizer, 16, tmp_path)
    other_data = tokenize(slice_of(mrpc_dir, 33), tokenizer, 64, tmp_path)
    assert not shorter.cache_hit and not other_data.cache_hit
    assert len({base.cache_key, shorter.cache_key, other_data.cache_key}) == 3
    assert max(len(ids) for ids in shorter.datasets["train"]["input_ids"]) == 16


def test_pairs_are_encoded_together(mrpc_dir, tokenizer, tmp_path):
    data = slice_of(mrpc_dir, 4)
    row = tokenize(data, tokenizer, 128, tmp_path).datasets["train"][0]
    sep = tokenizer.sep_token_id
    assert row["input_ids"].count(sep) == 2
    assert set(row["token_type_ids"]) == {0, 1}


def test_by_length_orders_rows_and_says_how(mrpc_dir, tokenizer, tmp_path):
    train = tokenize(slice_of(mrpc_dir, 40), tokenizer, 128, tmp_path).datasets["train"]
    ordered, order = by_length(train)
    lengths = [len(ids) for ids in ordered["input_ids"]]
    assert lengths == sorted(lengths) and lengths != [len(i) for i in train["input_ids"]]
    assert sorted(order) == list(range(40))
    assert ordered[5]["input_ids"] == train[int(order[5])]["input_ids"]
