"""1,000 classes of 2 rows each: the held-out table is built in one step, and the confusion
plot and the model card's table stay the same size whatever the number of classes (the plot
once took 17 GB)."""

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
from datasets import Dataset
from matplotlib.image import imread

from tasks import model_card
from tasks.data import LoadedData
from tasks.evaluation import PLOTTED_CLASSES, confusion_figure, evaluate_split, plot_confusion
from tasks.uncertainty import Scoring

CLASSES = 1000
NAMES = [f"class-{i:04d}" for i in range(CLASSES)]
MAX_PIXELS = 2000  # a side of the confusion plot, at most


class FixedLogits:
    """Stands in for the Trainer: each row's logits, returned in the order the rows come."""

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    def predict(self, dataset: Dataset, metric_key_prefix: str) -> SimpleNamespace:
        return SimpleNamespace(
            predictions=self.logits[np.array(dataset["row"])],
            label_ids=np.array(dataset["label"]),
            metrics={f"{metric_key_prefix}_loss": 0.25},
        )


def test_held_out_table_of_many_classes_is_built_in_one_step():
    labels = np.repeat(np.arange(CLASSES), 2)
    rows = len(labels)
    logits = np.random.default_rng(0).normal(size=(rows, CLASSES))
    logits[np.arange(rows), labels] += 4  # mostly right, not always
    dataset = Dataset.from_dict(
        {"input_ids": [[1] * (1 + i % 7) for i in range(rows)], "label": labels, "row": range(rows)}
    )
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(rows)], "label": labels})

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)  # a column at a time
        result = evaluate_split(
            FixedLogits(logits), dataset, frame, "validation", NAMES, Scoring(CLASSES)
        )

    table = result.predictions
    assert list(table.columns) == ["text", "label", "predicted", *(f"prob_{n}" for n in NAMES)]
    predicted = logits.argmax(axis=1)
    assert table["predicted"].tolist() == [NAMES[i] for i in predicted]
    assert table["label"].tolist() == [NAMES[i] for i in labels]
    probabilities = table[[f"prob_{n}" for n in NAMES]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    assert result.confusion.shape == (CLASSES, CLASSES) and result.confusion.sum() == rows
    assert result.metrics["accuracy"] == (predicted == labels).mean()


def test_confusion_plot_of_many_classes_shows_the_most_confused_at_a_bounded_size(tmp_path):
    matrix = np.diag(np.full(CLASSES, 2))
    confused = [10, 500, 999]
    matrix[confused, [500, 999, 10]] = 3

    figure = confusion_figure(matrix, NAMES, "validation confusion matrix")

    axes = figure.axes[0]
    shown = [tick.get_text() for tick in axes.get_xticklabels()]
    assert len(shown) == PLOTTED_CLASSES and {NAMES[i] for i in confused} <= set(shown)
    assert len(axes.texts) == PLOTTED_CLASSES**2  # a count per shown cell, no more
    assert f"{PLOTTED_CLASSES} most confused of 1,000 classes" in axes.get_title()
    png = plot_confusion(matrix, NAMES, "validation confusion matrix", tmp_path / "c.png")
    height, width = imread(png).shape[:2]
    assert width <= MAX_PIXELS and height <= MAX_PIXELS


def test_confusion_plot_of_few_classes_shows_every_count():
    matrix = np.array([[5, 1, 0], [2, 7, 0], [0, 0, 3]])

    axes = confusion_figure(matrix, ["a", "b", "c"], "validation confusion matrix").axes[0]

    assert [text.get_text() for text in axes.texts] == [str(n) for n in matrix.ravel()]
    assert axes.get_title() == "validation confusion matrix"


def test_model_card_of_many_classes_tabulates_the_most_confused():
    matrix = np.diag(np.full(CLASSES, 2))
    matrix[[10, 500], [500, 10]] = 3
    labels = pd.Series(np.repeat(np.arange(CLASSES), 2))
    data = LoadedData({"train": pd.DataFrame({"text": "t", "label": labels})}, NAMES, "d", False)
    result = SimpleNamespace(metrics={}, confusion=matrix)  # unscored, counted
    facts = model_card.CardFacts("r", "many-classes", data, {"validation": result})  # no more

    card = model_card.render(facts)

    assert "- train: 2,000 rows, 1,000 classes, 2 rows each" in card
    assert f"The {PLOTTED_CLASSES} most confused of 1,000 classes:" in card
    header = next(line for line in card.splitlines() if line.startswith("| true"))
    assert header.count("|") == PLOTTED_CLASSES + 2 and "class-0500" in header
    assert len(card) < 50_000  # every pair of classes: 4 MB
