"""The objective metric fits the data: F1 names its positive class, text labels without one
are judged by accuracy, and more than two classes get macro F1."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from tasks.config import FineTuneConfig
from tasks.errors import DataError
from tasks.evaluation import compute_metrics
from tasks.objective import describe, resolve_objective, scoring

RTE = ["entailment", "not_entailment"]


def test_text_labels_without_positive_label_resolve_to_accuracy():
    config = resolve_objective(FineTuneConfig(), RTE)
    assert config.objective_metric == "accuracy" and config.positive_label is None
    assert scoring(config, RTE).f1_average == "macro"
    assert describe(config, RTE) == (
        "objective: validation accuracy (F1 reported: macro F1 over 2 classes)"
    )


def test_integer_labels_resolve_to_f1_of_class_1():
    config = resolve_objective(FineTuneConfig(), ["0", "1"])
    assert (config.objective_metric, config.positive_label) == ("f1", "1")
    assert scoring(config, ["0", "1"]).positive == 1
    named = FineTuneConfig(label_names=["not_equivalent", "equivalent"])
    resolved = resolve_objective(named, named.label_names)
    assert (resolved.objective_metric, resolved.positive_label) == ("f1", "equivalent")


def test_a_named_positive_class_changes_which_f1_is_computed():
    truth = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    predicted = np.array([0, 1, 0, 1, 0, 0, 1, 1])
    for positive in RTE:
        config = resolve_objective(FineTuneConfig(positive_label=positive), RTE)
        assert config.objective_metric == "f1"
        result = compute_metrics(predicted, truth, scoring(config, RTE))
        expected = f1_score(truth, predicted, pos_label=RTE.index(positive))
        assert result["f1"] == pytest.approx(expected)
    assert f1_score(truth, predicted, pos_label=0) != f1_score(truth, predicted, pos_label=1)


def test_more_classes_use_macro_f1_and_an_explicit_objective_is_kept():
    names = ["a", "b", "c"]
    config = resolve_objective(FineTuneConfig(objective_metric="f1"), names)
    assert config.objective_metric == "f1" and scoring(config, names).f1_average == "macro"
    assert "macro F1 over 3 classes" in describe(config, names)
    kept = resolve_objective(FineTuneConfig(objective_metric="accuracy"), ["0", "1"])
    assert kept.objective_metric == "accuracy" and kept.positive_label == "1"


@pytest.mark.parametrize(
    ("positive", "names", "message"),
    [("yes", RTE, "not one of the labels"), ("a", ["a", "b", "c"], "two-class data")],
)
def test_an_unusable_positive_label_is_refused(positive, names, message):
    with pytest.raises(DataError, match=message):
        resolve_objective(FineTuneConfig(positive_label=positive), names)
