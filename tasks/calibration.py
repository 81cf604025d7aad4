"""Whether a model's probabilities mean what they say, and one temperature that fixes them.

A classifier fine-tuned to a low loss is often over-confident: rows it scores 0.95 are right
far less than 95% of the time. Expected calibration error (ECE, 15 equal-width bins of the
top probability: the row-weighted mean gap between each bin's accuracy and its mean top
probability; a bin holds the rows whose top probability is in ((b-1)/15, b/15]) and the Brier
score (the squared distance, summed over classes, between the probabilities and the one-hot
label, averaged over rows) say how far. Temperature scaling (Guo et al., 2017) divides the
logits by one number fitted on validation to the lowest log loss: the predicted labels stay
as they are, only the probabilities move. Test ECE shows whether the fit held.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from tasks.evaluation import SplitResult, softmax

BINS = 15


def bin_of(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bin index 0..bins-1 of each top probability, bins right-closed: ((b-1)/bins, b/bins]."""
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    confidence = probabilities.max(axis=1)
    right = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    bins = bin_of(confidence)
    gap = np.bincount(bins, right - confidence, minlength=BINS)  # sum of (right - confidence)
    return float(np.abs(gap).sum() / len(labels))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    one_hot = np.eye(probabilities.shape[1])[labels]
    return float(((probabilities - one_hot) ** 2).sum(axis=1).mean())


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits): log-probabilities differ from the logits by a
    per-row constant, which the softmax removes."""
    return softmax(np.log(np.clip(probabilities, 1e-300, None)) / temperature)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(
        -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-300, None)).mean()
    )


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] with the lowest log loss on these rows."""
    result = minimize_scalar(
        lambda log_t: log_loss(with_temperature(probabilities, np.exp(log_t)), labels),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def calibration_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "ece": expected_calibration_error(probabilities, labels),
        "brier": brier_score(probabilities, labels),
    }


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path
) -> Path:
    """A reliability diagram: accuracy against mean top probability per bin, one line per
    curve (e.g. before and after calibration), the diagonal for a calibrated model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    for name, (probabilities, labels) in curves.items():
        confidence = probabilities.max(axis=1)
        right = probabilities.argmax(axis=1) == labels
        bins = bin_of(confidence)
        rows = np.bincount(bins, minlength=BINS)
        seen = rows > 0
        mean_confidence = np.bincount(bins, confidence, minlength=BINS)[seen] / rows[seen]
        accuracy = np.bincount(bins, right, minlength=BINS)[seen] / rows[seen]
        ece = expected_calibration_error(probabilities, labels)
        axes.plot(mean_confidence, accuracy, marker="o", label=f"{name} (ECE {ece:.3f})")
    axes.set(xlabel="mean top probability in bin", ylabel="accuracy in bin", title=title)
    axes.set(xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


@dataclass
class Calibration:
    """ECE and Brier of each labelled held-out split, before and (with a temperature fitted on
    validation) after calibration."""

    temperature: float  # 1.0: not calibrated
    metrics: dict[str, float]
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # split -> name -> rows


def assess(results: dict[str, SplitResult], method: str) -> Calibration:
    """Calibration of the labelled splits; `method` "temperature" fits one on validation."""
    labelled = {split: result for split, result in results.items() if result.metrics}
    temperature = 1.0
    if method == "temperature":
        validation = labelled["validation"]
        temperature = fit_temperature(validation.probabilities, validation.labels)
    metrics: dict[str, float] = {"temperature": temperature} if method == "temperature" else {}
    curves = {}
    for split, result in labelled.items():
        before = (result.probabilities, result.labels)
        curves[split] = {"as trained": before}
        metrics |= {f"{split}_{k}": v for k, v in calibration_metrics(*before).items()}
        if method == "temperature":
            after = (with_temperature(result.probabilities, temperature), result.labels)
            curves[split][f"temperature {temperature:.3f}"] = after
            metrics |= {
                f"{split}_{k}_calibrated": v for k, v in calibration_metrics(*after).items()
            }
    return Calibration(temperature, metrics, curves)


def applied(results: dict[str, SplitResult], temperature: float) -> dict[str, SplitResult]:
    """The results as the calibrated logged model scores them: probabilities (and the
    predictions tables' `prob_*` columns) at `temperature`; labels and metrics unchanged."""
    if temperature == 1.0:
        return results
    calibrated = {}
    for split, result in results.items():
        probabilities = with_temperature(result.probabilities, temperature)
        columns = [c for c in result.predictions.columns if c.startswith("prob_")]
        table = result.predictions.copy()
        table[columns] = probabilities.round(6)
        calibrated[split] = replace(result, probabilities=probabilities, predictions=table)
    return calibrated


def record(client, run_id: str, results: dict[str, SplitResult], method: str) -> Calibration:
    """Assess, then log the numbers and one reliability diagram per labelled split."""
    from tasks import tracking

    calibration = assess(results, method)
    tracking.log_metrics(client, run_id, calibration.metrics)
    with tempfile.TemporaryDirectory() as folder:
        for split, curves in calibration.curves.items():
            path = Path(folder) / f"reliability_{split}.png"
            plot_reliability(curves, f"{split} reliability (15 bins)", path)
            client.log_artifact(run_id, str(path))
    return calibration
