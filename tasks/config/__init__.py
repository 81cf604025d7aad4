"""Typed configuration, validated once at the edge: the same objects are filled from a YAML
file, command-line flags (flows/cli.py generates one per field) or Prefect parameters.

- `fine_tune`: FineTuneConfig, every setting of one fine-tuning run;
- `search`: SearchConfig and RetrainConfig (their search space: tasks.search_space);
- `jobs`: PredictConfig and ReproduceConfig;
- `checks`: ConfigError and what every config shares (YAML, lists, error messages).
"""

from tasks.config.checks import (
    ConfigError,
    comma_list,
    format_validation_error,
    read_yaml,
    require_onnx,
    validated,
)
from tasks.config.fine_tune import PACKAGED_MODEL, FineTuneConfig
from tasks.config.jobs import PredictConfig, ReproduceConfig
from tasks.config.search import RetrainConfig, SearchConfig
from tasks.search_space import FloatRange, IntRange

__all__ = [
    "PACKAGED_MODEL",
    "ConfigError",
    "FineTuneConfig",
    "FloatRange",
    "IntRange",
    "PredictConfig",
    "ReproduceConfig",
    "RetrainConfig",
    "SearchConfig",
    "comma_list",
    "format_validation_error",
    "read_yaml",
    "require_onnx",
    "validated",
]
