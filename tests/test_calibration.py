"""Calibration numbers against direct computations on hand-made probabilities."""

import numpy as np
import pytest
import scipy.optimize
import scipy.special

from tasks.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    with_temperature,
)


def test_ece_and_brier_by_hand():
    # top probabilities 0.9 (right), 0.9 (wrong), 0.6 (right), 0.55 (wrong). Bin
    # (13/15, 14/15] holds both 0.9: accuracy 0.5, confidence 0.9, gap 0.4 on 2 rows. Bin
    # (8/15, 9/15] holds 0.6 and 0.55: accuracy 0.5, confidence 0.575, gap 0.075 on 2 rows.
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.4, 0.6], [0.55, 0.45]])
    labels = np.array([0, 0, 1, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(
        (2 * 0.4 + 2 * 0.075) / 4
    )
    brier = (2 * 0.01 + 2 * 0.81 + 2 * 0.16 + 2 * 0.55**2) / 4
    assert brier_score(probabilities, labels) == pytest.approx(brier)


def test_temperature_is_the_lowest_log_loss_and_keeps_labels():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 4, size=(300, 3))  # over-confident: right far less often
    labels = np.where(rng.random(300) < 0.6, logits.argmax(axis=1), rng.integers(0, 3, 300))
    probabilities = scipy.special.softmax(logits, axis=1)
    temperature = fit_temperature(probabilities, labels)

    def log_loss(t):
        return -scipy.special.log_softmax(logits / t, axis=1)[np.arange(300), labels].mean()

    best = scipy.optimize.minimize_scalar(log_loss, bounds=(0.05, 20), method="bounded").x
    assert temperature == pytest.approx(best, rel=1e-3) and temperature > 1
    scaled = with_temperature(probabilities, temperature)
    assert scaled == pytest.approx(scipy.special.softmax(logits / temperature, axis=1))
    assert (scaled.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert expected_calibration_error(scaled, labels) < expected_calibration_error(
        probabilities, labels
    )
