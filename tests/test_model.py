"""Model resolution: the packaged default, and clear errors before any weights load."""

import pytest
from transformers import GPT2Config, GPT2ForSequenceClassification

from tasks.config import PACKAGED_MODEL
from tasks.machine_recipe import layers_to_freeze
from tasks.model import ModelError, freeze_lower_layers, load_model, resolve_model


def test_packaged_model_has_safetensors():
    from pathlib import Path

    folder = Path(resolve_model(PACKAGED_MODEL))
    assert (folder / "config.json").is_file()
    assert list(folder.glob("*.safetensors"))


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        resolve_model(str(tmp_path / "nope"))


def test_folder_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(ModelError, match="no safetensors"):
        resolve_model(str(tmp_path))


def test_max_length_beyond_the_packaged_models_positions_is_refused():
    assert resolve_model(PACKAGED_MODEL, max_length=512)
    with pytest.raises(ModelError) as error:
        resolve_model(PACKAGED_MODEL, max_length=1000)
    assert str(error.value) == (
        "--max-length 1000: the model takes at most 512 tokens per input "
        "(max_position_embeddings 512); use --max-length 512 or less"
    )


@pytest.mark.parametrize(
    ("config", "limit"),
    [
        # RoBERTa's positions start after its padding id 1: 514 embeddings hold 512 tokens
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
        ({"model_type": "bert", "max_position_embeddings": 128}, 128),
        # DeBERTa-v2 without absolute positions has no such limit
        (
            {"model_type": "deberta-v2", "max_position_embeddings": 512,
             "position_biased_input": False, "relative_attention": True},
            None,
        ),
    ],
)  # fmt: skip
def test_max_length_limit_of_a_model_folder(tmp_path, config, limit):
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"")  # weights are not read to check
    if limit is None:
        assert resolve_model(str(tmp_path), max_length=4096)
        return
    assert resolve_model(str(tmp_path), max_length=limit)
    with pytest.raises(ModelError, match=rf"--max-length {limit + 1}: .* at most {limit} tokens"):
        resolve_model(str(tmp_path), max_length=limit + 1)


def test_unknown_hub_id_fails_offline():
    with pytest.raises(ModelError, match="unknown model"):
        resolve_model("no-such-org-xyz/no-such-model")


def test_code_shipped_with_a_model_never_runs(tmp_path):
    """A folder whose config points at its own Python code: the library's own class loads
    the weights and the folder's code is never imported."""
    import json
    from pathlib import Path

    from tasks.model import load_model

    packaged = Path(resolve_model(PACKAGED_MODEL))
    folder = tmp_path / "model"
    folder.mkdir()
    for item in packaged.iterdir():
        if item.is_file():
            (folder / item.name).symlink_to(item)
    config = json.loads((packaged / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.EvilModel"}
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "code-ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    model = load_model(str(folder), ["0", "1"])
    assert type(model).__module__.startswith("transformers.models.bert")
    assert not marker.exists()


@pytest.fixture(scope="module")
def minilm():
    return load_model(resolve_model(PACKAGED_MODEL), ["no", "yes"])


def trainable(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_auto_freezes_the_lower_third_only_in_fp32_on_cpu(minilm):
    assert layers_to_freeze("auto", bf16=True, model=minilm) == 0
    assert layers_to_freeze("auto", bf16=False, model=minilm) == 2  # MiniLM has 6 layers
    assert layers_to_freeze(4, bf16=True, model=minilm) == 4  # a number is taken as given
    tiny_gpt = GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=8, n_head=2))
    assert layers_to_freeze("auto", bf16=False, model=tiny_gpt) == 0  # not BERT-like


def test_freezing_stops_at_the_named_layer():
    model = load_model(resolve_model(PACKAGED_MODEL), ["no", "yes"])
    before = trainable(model)
    freeze_lower_layers(model, 2)
    after = trainable(model)
    frozen = before - after
    lower = ("bert.embeddings.", "bert.encoder.layer.0.", "bert.encoder.layer.1.")
    assert frozen and all(name.startswith(lower) for name in frozen)
    assert any(name.startswith("bert.encoder.layer.2.") for name in after)
    assert any(name.startswith("classifier.") for name in after)


def test_freezing_what_the_model_lacks_is_refused(minilm):
    with pytest.raises(ModelError, match="has 6 encoder layers"):
        freeze_lower_layers(minilm, 7)
    tiny_gpt = GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=8, n_head=2))
    with pytest.raises(ModelError, match="BERT-like"):
        freeze_lower_layers(tiny_gpt, 1)
