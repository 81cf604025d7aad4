"""What every config shares: the user-facing error, list parsing, reading YAML, and turning
pydantic's error list into one message."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any, TypeVar

import yaml
from packaging.version import Version
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """Raised for configuration that cannot work, with a message meant for the user."""


def comma_list(value: Any) -> Any:
    """`a, b,c` from a command line or YAML string becomes ["a", "b", "c"]."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def require_onnx(*modules: str) -> None:
    """Refuse an ONNX setting up front when its optional packages are missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(
            f"needs {', '.join(missing)}: pip install 'finetrack[onnx]' (or the packages)"
        )


def require_version(package: str, minimum: str, needed_for: str) -> None:
    """Refuse a setting up front when an installed package is older than it needs."""
    installed = importlib.metadata.version(package)
    if Version(installed) < Version(minimum):
        raise ValueError(
            f"{needed_for} needs {package}>={minimum} ({installed} is installed): "
            "pip install -U 'finetrack[onnx]'"
        )


def format_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error list into one line per bad setting."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)


def read_yaml(config_file: Path | str | None) -> dict[str, Any]:
    """Settings from a YAML mapping (empty without a file)."""
    if config_file is None:
        return {}
    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return loaded


def validated(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """Build a config object; every problem is listed in one ConfigError."""
    try:
        return model(**values)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None
