"""Model resolution: the packaged default, and clear errors before any weights load."""

import pytest

from tasks.config import PACKAGED_MODEL
from tasks.model import ModelError, resolve_model


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
