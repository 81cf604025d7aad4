"""The model card shipped inside every logged model (its `README.md`), built from the
values the run recorded, as the flow holds them.

Whoever downloads the model from the registry, without access to the run, still learns what
it was trained on, how it scored, with which recipe and library versions, and under which
data licence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.data import LoadedData
from tasks.evaluation import PLOTTED_CLASSES, SplitResult, most_confused, score_text

# Licences of the base models this project ships or names by default.
BASE_LICENCES = {"packaged:all-MiniLM-L6-v2": "apache-2.0"}
DATA_LICENCES = {
    "mrpc": "GLUE MRPC (Microsoft Research Paraphrase Corpus): licensed for non-commercial "
    "research use only; a model trained on it inherits that restriction."
}


def _confusion_table(result: SplitResult, label_names: list[str]) -> list[str]:
    """The counts as a markdown table: beyond PLOTTED_CLASSES classes, those of the most
    confused only, as in the plot (every pair of 1,000 classes made a 4 MB card)."""
    shown = np.arange(len(label_names))
    lines = []
    if len(shown) > PLOTTED_CLASSES:
        shown = most_confused(result.confusion, PLOTTED_CLASSES)
        lines += [f"The {PLOTTED_CLASSES} most confused of {len(label_names):,} classes:", ""]
    names = [label_names[i] for i in shown]
    lines.append("| true \\ predicted | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    rows = result.confusion[np.ix_(shown, shown)].tolist()
    for name, row in zip(names, rows, strict=True):
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


def served_by_onnx(precision: str, parity: str) -> str:
    """How an ONNX export predicts, and how it compares with the model the scores belong to."""
    return (
        f"This is its ONNX Runtime export ({precision}"
        + (
            ", int8 weights in blocks of 16 and int8 products, each row's activations "
            "quantised on their own"
            if precision == "int8"
            else ""
        )
        + "), which predicts on CPU without torch; the scores above are the full model's. "
        + parity
    )


@dataclass(frozen=True)
class CardFacts:
    """What a card states, as the run recorded it: its recipe (`TrainResult.recipe`), the
    weights it started from, the calibration metrics and the library versions."""

    run_id: str
    run_name: str
    data: LoadedData
    results: dict[str, SplitResult]
    recipe: dict[str, object] = field(default_factory=dict)
    model_path: str | None = None
    calibration: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def render(facts: CardFacts, served: str = SERVED_BY_TORCH) -> str:
    """Markdown with a YAML header (the base model's licence, where known); `served` says how
    the model it ships with predicts."""
    recipe, data = facts.recipe, facts.data
    licence = BASE_LICENCES.get(str(recipe.get("model_name_or_path", "")), "unknown")
    lines = [
        "---",
        f"license: {licence}",
        "pipeline_tag: text-classification",
        "---",
        f"# {facts.run_name}",
        "",
        f"Fine-tuned by finetrack in MLflow run `{facts.run_id}` from "
        f"`{recipe.get('model_name_or_path')}` (weights: `{facts.model_path}`).",
        "",
        "## Data",
        "",
        f"- source: `{data.source}`; fingerprint `{data.fingerprint}`",
        f"- labels: {', '.join(f'{i} = {name}' for i, name in enumerate(data.label_names))}",
        *(f"- {line}" for line in data.summary_lines()),
        f"- licence: {data_licence(data)}",
        "",
        f"## Scores (best epoch by validation {recipe.get('objective_metric', 'f1')})",
        "",
        "| split | " + " | ".join(("accuracy", "f1", "loss")) + " |",
        "|---|---|---|---|",
    ]
    for split, result in facts.results.items():
        if result.metrics:
            cells = [score_text(result.metrics, name) for name in ("accuracy", "f1", "loss")]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
    positive = recipe.get("positive_label")
    f1 = f"F1 of the positive class {positive!r}" if positive is not None else "macro F1"
    lines += ["", f"Brackets: 95% bootstrap interval over the split's rows. f1: {f1}."]
    for split, result in facts.results.items():
        if result.confusion is not None:
            table = _confusion_table(result, data.label_names)
            lines += ["", f"Confusion matrix, {split}:", "", *table]
    calibration = facts.calibration
    if "temperature" in calibration:
        lines += [
            "",
            f"Its scores are calibrated: logits divided by the temperature "
            f"{calibration['temperature']:.4f}, fitted on validation (ECE "
            f"{calibration['validation_ece']:.4f} before, "
            f"{calibration['validation_ece_calibrated']:.4f} after); accuracy, F1 and labels "
            "are the same either way, the loss is before.",
        ]
    precision = "bf16 autocast" if recipe.get("bf16_active") else "fp32"
    lines += ["", f"Scored by `trainer.predict` in {precision}. {served}"]
    lines += ["", "## Training recipe", ""]
    lines += [f"- {name}: {value}" for name, value in recipe.items()]
    lines += ["", "## Library versions", ""]
    lines += [f"- {name}: {value}" for name, value in sorted(facts.versions.items())]
    return "\n".join(lines) + "\n"
