"""The project's metric module against values computed by hand."""

import numpy as np
import pytest

from tasks.evaluation import compute_metrics, softmax
from tasks.uncertainty import Scoring


def test_binary_accuracy_and_f1_by_hand():
    # 8 examples: TP=3 (idx 0,1,2), FN=1 (3), FP=2 (4,5), TN=2 (6,7)
    references = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    predictions = np.array([1, 1, 1, 0, 1, 1, 0, 0])
    result = compute_metrics(predictions, references, Scoring(2, positive=1))
    assert result["accuracy"] == pytest.approx(5 / 8)
    precision, recall = 3 / 5, 3 / 4
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_no_positive_prediction_gives_zero_f1():
    result = compute_metrics(np.array([0, 0]), np.array([1, 0]), Scoring(2, positive=1))
    assert result == {"accuracy": 0.5, "f1": 0.0}


def test_three_classes_use_macro_f1():
    references = np.array([0, 1, 2, 2])
    predictions = np.array([0, 2, 2, 2])
    # per class F1: 0 -> 1.0, 1 -> 0.0, 2 -> 2*(2/3*1)/(2/3+1) = 0.8
    result = compute_metrics(predictions, references, Scoring(3))
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["f1"] == pytest.approx((1.0 + 0.0 + 0.8) / 3)


def test_softmax_rows_sum_to_one():
    probabilities = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert probabilities[1, 1] == pytest.approx(0.75)
