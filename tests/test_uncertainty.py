"""Bootstrap intervals and McNemar's test against scikit-learn and scipy, resample by resample."""

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score

from tasks.uncertainty import Scoring, compare_paired, mcnemar_p, metric_intervals

RNG = np.random.default_rng(7)
TRUTH = RNG.integers(0, 2, 200)
GOOD = np.where(RNG.random(200) < 0.85, TRUTH, 1 - TRUTH)
FAIR = np.where(RNG.random(200) < 0.75, TRUTH, 1 - TRUTH)


def sklearn_samples(predicted, truth, metric, seed=0, resamples=2000):
    """The metric on each resample, one scikit-learn call each (the documented resampling)."""
    indices = np.random.default_rng(seed).integers(0, len(truth), size=(resamples, len(truth)))
    return np.array([metric(truth[rows], predicted[rows]) for rows in indices])


@pytest.mark.parametrize(
    ("scoring", "f1"),
    [(Scoring(2, positive=1), f1_score), (Scoring(2, positive=0),
      lambda t, p: f1_score(t, p, pos_label=0)),
     (Scoring(2), lambda t, p: f1_score(t, p, average="macro"))],
)  # fmt: skip
def test_intervals_equal_percentiles_of_sklearn_scores(scoring, f1):
    intervals = metric_intervals(GOOD, TRUTH, scoring)
    for name, metric in (("accuracy", accuracy_score), ("f1", f1)):
        expected = np.quantile(sklearn_samples(GOOD, TRUTH, metric), [0.025, 0.975])
        assert intervals[name] == pytest.approx(tuple(expected), abs=1e-12)


def test_macro_f1_of_many_classes_matches_sklearn():
    truth = RNG.integers(0, 12, 300)
    predicted = np.where(RNG.random(300) < 0.6, truth, RNG.integers(0, 12, 300))
    low, high = metric_intervals(predicted, truth, Scoring(12), resamples=300)["f1"]
    samples = sklearn_samples(
        predicted, truth, lambda t, p: f1_score(t, p, average="macro"), resamples=300
    )
    assert (low, high) == pytest.approx(tuple(np.quantile(samples, [0.025, 0.975])), abs=1e-12)


def test_paired_difference_and_mcnemar_against_scipy():
    comparison = compare_paired(GOOD, FAIR, TRUTH, Scoring(2, positive=1), "f1", confidence=0.9)
    differences = sklearn_samples(GOOD, TRUTH, f1_score) - sklearn_samples(FAIR, TRUTH, f1_score)
    assert (comparison.low, comparison.high) == pytest.approx(
        tuple(np.quantile(differences, [0.05, 0.95])), abs=1e-12
    )
    assert comparison.difference == pytest.approx(f1_score(TRUTH, GOOD) - f1_score(TRUTH, FAIR))
    only_good = int(((GOOD == TRUTH) & (FAIR != TRUTH)).sum())
    only_fair = int(((FAIR == TRUTH) & (GOOD != TRUTH)).sum())
    assert comparison.disagreements == only_good + only_fair
    expected = binomtest(only_good, only_good + only_fair, 0.5).pvalue
    assert comparison.mcnemar_p == pytest.approx(expected, rel=1e-9)
    assert mcnemar_p(GOOD == TRUTH, GOOD == TRUTH) == 1.0
