"""Score a trained model on held-out splits: metrics, confusion matrix, per-example predictions.

Metrics go through the `evaluate` library with the project's own accuracy/F1 module, which
computes what `evaluate.load("glue", "mrpc")` does but loads without the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from tasks.tokenization import by_length
from tasks.uncertainty import Scoring, metric_intervals

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRIC_DIR = Path(__file__).parent / "metrics" / "accuracy_f1"
PLOTTED_CLASSES = 30  # a confusion plot draws at most this many classes (with their counts)
FIGURE_DPI = 110


@cache
def load_metric():
    """The accuracy/F1 metric module, loaded from its folder (works offline)."""
    import evaluate

    return evaluate.load(str(METRIC_DIR))


def compute_metrics(predictions: np.ndarray, references: np.ndarray, scoring: Scoring) -> dict:
    """Accuracy and F1: binary F1 of the positive class where there is one, else macro F1."""
    return load_metric().compute(
        predictions=predictions,
        references=references,
        average=scoring.f1_average,
        pos_label=1 if scoring.positive is None else scoring.positive,
    )


def trainer_metrics(scoring: Scoring):
    """`compute_metrics` callback for the Trainer: logits in, accuracy and F1 out."""

    def metrics(eval_prediction) -> dict:
        logits, labels = eval_prediction
        return compute_metrics(np.argmax(logits, axis=-1), labels, scoring)

    return metrics


def score_text(metrics: dict[str, float], name: str) -> str:
    """`0.8235 [0.7868, 0.8603]`: the figure with its 95% interval where it has one."""
    text = f"{metrics[name]:.4f}"
    if f"{name}_ci_low" in metrics:
        text += f" [{metrics[f'{name}_ci_low']:.4f}, {metrics[f'{name}_ci_high']:.4f}]"
    return text


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
    probabilities: np.ndarray  # unrounded, rows in the split's order
    labels: np.ndarray  # label ids; -1 where unlabelled


class OrderError(RuntimeError):
    """`trainer.predict` returned rows in another order than they were given."""


def evaluate_split(
    trainer, dataset, frame: pd.DataFrame, split: str, label_names: list[str], scoring: Scoring
) -> SplitResult:
    """`trainer.predict` on one split; metrics with their 95% bootstrap intervals (seeded,
    `tasks.uncertainty`) and the confusion matrix only when labelled.

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
    names = np.asarray(label_names, dtype=object)
    columns = [f"prob_{name}" for name in label_names]
    # one frame for all the probability columns: added one by one, a thousand classes make
    # a thousand copies (and as many pandas PerformanceWarnings)
    scores = pd.DataFrame(probabilities.round(6), index=frame.index, columns=columns)
    table = pd.concat([frame.assign(predicted=names[predicted]), scores], axis=1)
    if not labelled:
        return SplitResult({}, None, table, probabilities, labels)
    table["label"] = names[labels]
    metrics = compute_metrics(predicted, labels, scoring)
    for name, (low, high) in metric_intervals(predicted, labels, scoring).items():
        metrics |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
    metrics["loss"] = float(output.metrics[f"{split}_loss"])
    matrix = confusion_matrix(labels, predicted, labels=list(range(len(label_names))))
    return SplitResult(metrics, matrix, table, probabilities, labels)


def most_confused(matrix: np.ndarray, count: int) -> np.ndarray:
    """Indices (ascending) of the `count` classes with the most errors, as true or predicted
    class."""
    errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diag(matrix)
    return np.sort(np.argsort(-errors, kind="stable")[:count])


def confusion_figure(matrix: np.ndarray, label_names: list[str], title: str) -> Figure:
    """A confusion matrix (rows: true label, columns: predicted) with its counts.

    A cell and a count per pair of classes grows with the square of the classes (1,000
    classes once took 17 GB), so beyond PLOTTED_CLASSES only the most confused are drawn,
    the title says so, and the figure is never larger than PLOTTED_CLASSES classes make it.
    """
    from matplotlib.figure import Figure

    shown = np.arange(len(label_names))
    if len(shown) > PLOTTED_CLASSES:
        shown = most_confused(matrix, PLOTTED_CLASSES)
        title = f"{title}\n{PLOTTED_CLASSES} most confused of {len(label_names):,} classes"
    matrix = matrix[np.ix_(shown, shown)]
    names = [label_names[i] for i in shown]
    figure = Figure(figsize=(4 + 0.4 * len(names), 3.5 + 0.4 * len(names)), dpi=FIGURE_DPI)
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    figure.tight_layout()
    return figure


def plot_confusion(matrix: np.ndarray, label_names: list[str], title: str, path: Path) -> Path:
    """The confusion-matrix PNG of `confusion_figure`."""
    confusion_figure(matrix, label_names, title).savefig(path, dpi=FIGURE_DPI)
    return path


def evaluate_model(trainer, datasets, data, scoring: Scoring) -> dict[str, SplitResult]:
    """Validation always; test when the data has a labelled (or unlabelled) test split."""
    return {
        split: evaluate_split(
            trainer, datasets[split], data.splits[split], split, data.label_names, scoring
        )
        for split in ("validation", "test")
        if split in datasets
    }
