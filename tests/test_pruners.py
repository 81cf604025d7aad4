"""The pruners a search can use, on hand-written learning curves (no training)."""

import math

import optuna
import pytest

from tasks.config import SearchConfig
from tasks.pruning import make_pruner


def study_with(pruner: str, curves: list[list[float]]) -> optuna.Study:
    """A maximising study holding one completed trial per curve, asked after every report
    as the pruning callback asks (successive halving records its rungs then)."""
    config = SearchConfig(pruner=pruner)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(config))
    for curve in curves:
        trial = study.ask()
        verdicts(trial, curve)
        study.tell(trial, max(curve))
    return study


def verdicts(trial: optuna.Trial, curve: list[float]) -> list[bool]:
    """should_prune after each report of this curve (report k at step k)."""
    answers = []
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
        answers.append(trial.should_prune())
    return answers


def new_trial(study: optuna.Study, curve: list[float]) -> list[bool]:
    return verdicts(study.ask(), curve)


def test_latest_median_prunes_a_trial_that_fell_behind_after_a_lucky_report():
    done = [[0.80, 0.82, 0.84], [0.78, 0.80, 0.83]]  # medians by step: 0.79, 0.81, 0.835
    lucky_then_behind = [0.85, 0.79, 0.86]
    assert new_trial(study_with("median-latest", done), lucky_then_behind) == [False, True, False]
    # Optuna's median pruner judges the best report so far, so the lucky 0.85 carries it
    assert new_trial(study_with("median", done), lucky_then_behind) == [False, False, False]
    assert new_trial(study_with("median-latest", done), [0.79, 0.81, 0.835]) == [False] * 3  # tie
    assert new_trial(study_with("median-latest", done), [math.nan]) == [True]


def test_latest_median_waits_for_two_completed_trials():
    assert new_trial(study_with("median-latest", [[0.9, 0.9]]), [0.1, 0.1]) == [False, False]


@pytest.mark.parametrize(
    ("new", "pruned"), [([0.85, 0.70], [False, True]), ([0.75], [True]), ([0.85, 0.9], [False] * 2)]
)
def test_asha_keeps_the_top_half_at_1_2_4_reports(new, pruned):
    # rungs at reports 1 and 2; with fewer than four trials at a rung only the best goes on
    done = [[0.80, 0.80, 0.80], [0.70, 0.85, 0.86]]
    assert new_trial(study_with("asha", done), new) == pruned
