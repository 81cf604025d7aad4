"""The frozen layers' kept outputs stand in for them exactly, and leave the model as it was."""

import pandas as pd
import pytest
import torch
from transformers import DataCollatorWithPadding

from tasks import frozen_features
from tasks.config import PACKAGED_MODEL
from tasks.frozen_features import FrozenFeatures
from tasks.model import freeze_lower_layers, load_model, resolve_model
from tasks.tokenization import load_tokenizer


@pytest.fixture(scope="module")
def mrpc_rows(mrpc_dir):
    """The first 32 MRPC train pairs, tokenized as the flow does, and its collator."""
    tokenizer = load_tokenizer(resolve_model(PACKAGED_MODEL))
    frame = pd.read_csv(mrpc_dir / "train.tsv", sep="\t", quoting=3).head(32)
    encoded = tokenizer(list(frame.sentence1), list(frame.sentence2), truncation=True)
    rows = [{name: values[i] for name, values in encoded.items()} for i in range(len(frame))]
    return rows, DataCollatorWithPadding(tokenizer)


def frozen_model(count: int):
    model = load_model(resolve_model(PACKAGED_MODEL), ["no", "yes"])
    freeze_lower_layers(model, count)
    return model


def kept(model, count: int, rows, collate) -> FrozenFeatures | None:
    batches = [collate(rows[start : start + 16]) for start in range(0, len(rows), 16)]
    tokens = sum(len(row["input_ids"]) for row in rows)
    return FrozenFeatures.for_training(model, count, iter(batches), tokens, bf16=False)


def test_upper_layers_on_kept_outputs_score_as_the_whole_model(mrpc_rows):
    rows, collate = mrpc_rows
    model = frozen_model(2)
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    model.train()
    features = kept(model, 2, rows, collate)
    assert len(features.rows) == len(rows) and model.training  # its mode is given back
    batch = collate(rows[5:13])  # other neighbours, so other padding, than when kept
    model.eval()
    with torch.no_grad():
        whole = model(**batch).logits
        with features.upper_layers_only(features.lookup(batch)):
            assert len(model.bert.encoder.layer) == 4
            upper = model(**batch).logits
    torch.testing.assert_close(upper, whole, rtol=0, atol=1e-5)
    assert len(model.bert.encoder.layer) == 6 and "forward" not in vars(model.bert.embeddings)
    after = model.state_dict()
    assert after.keys() == weights.keys()
    assert all(after[name].equal(value) for name, value in weights.items())


def test_a_row_not_kept_is_not_looked_up(mrpc_rows):
    rows, collate = mrpc_rows
    model = frozen_model(2)
    features = kept(model, 2, rows[:16], collate)
    assert features.lookup(collate(rows[:16])) is not None
    assert features.lookup(collate(rows[15:17])) is None  # row 16 was never run


def test_nothing_kept_without_frozen_layers_or_room(mrpc_rows, monkeypatch):
    rows, collate = mrpc_rows
    assert kept(frozen_model(0), 0, rows, collate) is None
    monkeypatch.setattr(frozen_features, "MEMORY_LIMIT_BYTES", 1024)
    assert kept(frozen_model(2), 2, rows, collate) is None


def test_nothing_kept_where_the_layers_above_cannot_take_the_kept_outputs():
    """ELECTRA projects narrower embeddings up to the encoder's width between the two."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    config = ElectraConfig(
        vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=3,
        num_attention_heads=2, intermediate_size=32,
    )  # fmt: skip
    model = ElectraForSequenceClassification(config)
    freeze_lower_layers(model, 1)
    ids = torch.randint(1, 50, (4, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    assert FrozenFeatures.for_training(model, 1, [batch], ids.numel(), bf16=False) is None
    assert len(model.electra.encoder.layer) == 3 and "forward" not in vars(model.electra.embeddings)
