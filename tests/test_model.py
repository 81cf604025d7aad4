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
