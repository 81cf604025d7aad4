"""The model card shipped inside every logged model (its `README.md`), built from the run.

Whoever downloads the model from the registry, without access to the run, still learns what
it was trained on, how it scored, with which recipe and library versions, and under which
data licence.
"""

from __future__ import annotations

from mlflow.entities import Run

from tasks.data import LoadedData
from tasks.evaluation import SplitResult

RECIPE = (
    "model_name_or_path", "learning_rate", "batch_size", "num_epochs", "weight_decay",
    "warmup_ratio", "seed", "max_length", "objective_metric", "bf16", "group_by_length",
    "frozen_layers", "frozen_features_cached",
)  # fmt: skip
# Licences of the base models this project ships or names by default.
BASE_LICENCES = {"packaged:all-MiniLM-L6-v2": "apache-2.0"}
DATA_LICENCES = {
    "mrpc": "GLUE MRPC (Microsoft Research Paraphrase Corpus): licensed for non-commercial "
    "research use only; a model trained on it inherits that restriction."
}


def _confusion_table(result: SplitResult, label_names: list[str]) -> list[str]:
    lines = ["| true \\ predicted | " + " | ".join(label_names) + " |"]
    lines.append("|---" * (len(label_names) + 1) + "|")
    for name, row in zip(label_names, result.confusion.tolist(), strict=True):
        lines.append(f"| {name} | " + " | ".join(str(count) for count in row) + " |")
    return lines


def data_licence(data: LoadedData) -> str:
    """The licence note of a known data set, else a reminder to check it."""
    source = data.source.lower()
    for key, note in DATA_LICENCES.items():
        if key in source:
            return note
    return f"Not recorded for {data.source}: check the licence of the data before using the model."


SERVED_BY_TORCH = (
    "This model predicts in bf16 where the hardware computes it natively, else in fp32 "
    '(`params={"precision": "fp32"}` forces fp32).'
)


def for_onnx(card: str, precision: str, parity: str) -> str:
    """The card of an ONNX export: how the export predicts, and how it compares with the
    model the scores above belong to."""
    served = (
        f"This is its ONNX Runtime export ({precision}"
        + (", weights and activations quantised dynamically" if precision == "int8" else "")
        + "), which predicts on CPU without torch; the scores above are the full model's. "
        + parity
    )
    return card.replace(SERVED_BY_TORCH, served)


def render(run: Run, data: LoadedData, results: dict[str, SplitResult]) -> str:
    """Markdown with a YAML header (the base model's licence, where known)."""
    params = run.data.params
    licence = BASE_LICENCES.get(params.get("model_name_or_path", ""), "unknown")
    counts = data.summary()
    lines = [
        "---",
        f"license: {licence}",
        "pipeline_tag: text-classification",
        "---",
        f"# {run.info.run_name}",
        "",
        f"Fine-tuned by finetrack in MLflow run `{run.info.run_id}` from "
        f"`{params.get('model_name_or_path')}` (weights: `{params.get('model_path')}`).",
        "",
        "## Data",
        "",
        f"- source: `{data.source}`; fingerprint `{data.fingerprint}`",
        f"- labels: {', '.join(f'{i} = {name}' for i, name in enumerate(data.label_names))}",
        *(f"- {split}: {values}" for split, values in counts.items()),
        f"- licence: {data_licence(data)}",
        "",
        "## Scores (best epoch by validation " + params.get("objective_metric", "f1") + ")",
        "",
        "| split | " + " | ".join(("accuracy", "f1", "loss")) + " |",
        "|---|---|---|---|",
    ]
    for split, result in results.items():
        if result.metrics:
            cells = [f"{result.metrics[name]:.4f}" for name in ("accuracy", "f1", "loss")]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
    for split, result in results.items():
        if result.confusion is not None:
            table = _confusion_table(result, data.label_names)
            lines += ["", f"Confusion matrix, {split}:", "", *table]
    precision = "bf16 autocast" if params.get("bf16_active") == "True" else "fp32"
    lines += ["", f"Scored by `trainer.predict` in {precision}. {SERVED_BY_TORCH}"]
    lines += ["", "## Training recipe", ""]
    lines += [f"- {name}: {params[name]}" for name in RECIPE if name in params]
    lines += ["", "## Library versions", ""]
    versions = {k: v for k, v in params.items() if k.endswith("_version") or k == "python"}
    lines += [f"- {name}: {value}" for name, value in sorted(versions.items())]
    return "\n".join(lines) + "\n"
