"""Score a trained model on held-out splits: metrics, confusion matrix, per-example predictions.

Metrics go through the `evaluate` library with the project's own accuracy/F1 module, which
computes what `evaluate.load("glue", "mrpc")` does but loads without the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from tasks.tokenization import by_length

METRIC_DIR = Path(__file__).parent / "metrics" / "accuracy_f1"


@cache
def load_metric():
    """The accuracy/F1 metric module, loaded from its folder (works offline)."""
    import evaluate

    return evaluate.load(str(METRIC_DIR))


def compute_metrics(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> dict:
    """Accuracy and F1 (binary for two classes as GLUE, macro otherwise)."""
    average = "binary" if num_labels == 2 else "macro"
    return load_metric().compute(predictions=predictions, references=references, average=average)


def trainer_metrics(num_labels: int):
    """`compute_metrics` callback for the Trainer: logits in, accuracy and F1 out."""

    def metrics(eval_prediction) -> dict:
        logits, labels = eval_prediction
        return compute_metrics(np.argmax(logits, axis=-1), labels, num_labels)

    return metrics


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass
class SplitResult:
    """What one held-out split tells about the model."""

    metrics: dict[str, float]
    confusion: np.ndarray | None
    predictions: pd.DataFrame


class OrderError(RuntimeError):
    """`trainer.predict` returned rows in another order than they were given."""


def evaluate_split(
    trainer, dataset, frame: pd.DataFrame, split: str, label_names: list[str]
) -> SplitResult:
    """`trainer.predict` on one split; metrics and confusion matrix only when labelled.

    Rows are predicted in length order (less padding) and mapped back. Before anything is
    recorded, the labels the Trainer returns are checked against the split's own labels in
    the order submitted, so a sampler that reorders rows fails loudly instead of scoring
    predictions against the wrong rows.
    """
    labels = frame["label"].to_numpy()
    labelled = bool((labels >= 0).all())
    if not labelled and "label" in dataset.column_names:
        dataset = dataset.remove_columns("label")  # -1 is no class: nothing to score
    ordered, order = by_length(dataset)
    output = trainer.predict(ordered, metric_key_prefix=split)
    if labelled and not np.array_equal(np.asarray(output.label_ids), labels[order]):
        raise OrderError(f"{split}: trainer.predict returned the rows in another order")
    logits = np.empty_like(np.asarray(output.predictions, dtype=np.float64))
    logits[order] = output.predictions
    probabilities = softmax(logits)
    predicted = probabilities.argmax(axis=-1)
    table = frame.copy()
    table["predicted"] = [label_names[i] for i in predicted]
    for index, name in enumerate(label_names):
        table[f"prob_{name}"] = probabilities[:, index].round(6)
    if not labelled:
        return SplitResult({}, None, table)
    table["label"] = [label_names[i] for i in labels]
    metrics = compute_metrics(predicted, labels, len(label_names))
    metrics["loss"] = float(output.metrics[f"{split}_loss"])
    matrix = confusion_matrix(labels, predicted, labels=list(range(len(label_names))))
    return SplitResult(metrics, matrix, table)


def plot_confusion(matrix: np.ndarray, label_names: list[str], title: str, path: Path) -> Path:
    """A confusion-matrix PNG (rows: true label, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4 + 0.4 * len(label_names), 3.5 + 0.4 * len(label_names)))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(label_names)), label_names, rotation=30, ha="right")
    axes.set_yticks(range(len(label_names)), label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def evaluate_model(trainer, datasets, data) -> dict[str, SplitResult]:
    """Validation always; test when the data has a labelled (or unlabelled) test split."""
    return {
        split: evaluate_split(trainer, datasets[split], data.splits[split], split, data.label_names)
        for split in ("validation", "test")
        if split in datasets
    }
