"""Pruning: which trials stop early (the pruner, chosen by `SearchConfig.pruner`) and the
Trainer callback that reports a trial's validation score to it and stops training when told.

A trial reports `reports_per_epoch` times an epoch: the pruner's steps are fractions of an
epoch (step 1 = the first report). Every study of finetrack maximises its objective.
"""

from __future__ import annotations

import math
import statistics

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from tasks.config import SearchConfig
from tasks.study_storage import with_db_retries
from tasks.train import TrainerAware


class LatestMedianPruner(optuna.pruners.BasePruner):
    """Prunes a trial whose latest report is below the median of the completed trials'
    reports at the same step (NaN is pruned), once `n_startup_trials` have completed.

    Optuna's MedianPruner judges a trial by its best report so far: one lucky early score
    (often a report within an epoch, which no checkpoint keeps) carries a trial that has
    fallen behind since to its end. Here a trial goes on only while it stands at or above
    the median now. Every study of finetrack maximises its objective."""

    def __init__(self, n_startup_trials: int = 2):
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < self.n_startup_trials:
            return False
        latest = trial.intermediate_values[step]
        others = [t.intermediate_values[step] for t in completed if step in t.intermediate_values]
        return math.isnan(latest) or (bool(others) and latest < statistics.median(others))


def make_pruner(config: SearchConfig) -> optuna.pruners.BasePruner:
    """Pruner acting on the validation metric, reported `reports_per_epoch` times an epoch:
    its steps are fractions of an epoch (step 1 = the first report)."""
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if config.pruner == "median-latest":
        return LatestMedianPruner(n_startup_trials=2)
    if config.pruner == "asha":
        # asynchronous successive halving: after 1, 2, 4, ... reports a trial goes on only
        # while its latest report is in the top half of those of every trial that got there
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    if config.pruner == "hyperband":
        steps = config.num_epochs_range.high * config.reports_per_epoch
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=steps, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


class PruningCallback(TrainerAware):
    """Reports the validation metric `per_epoch` times an epoch to Optuna (step = how many
    of those points training has passed) and stops training when Optuna prunes.

    The epoch's end is the Trainer's own evaluation; the points within an epoch are extra
    evaluations (`probe_*` in the Trainer's log), which only the pruner sees: the best
    checkpoint, the trial's value and the MLflow record stay per epoch, and training goes on
    with the random state it had (the same model as without them). Without a pruner
    (`NopPruner`) nobody reads them, and they are skipped.
    """

    def __init__(self, trial: optuna.Trial, objective: str, per_epoch: int, start_epoch: int = 0):
        self.trial = trial
        self.objective = objective
        self.per_epoch = per_epoch
        self.pruned = False
        self.epochs_done: float = start_epoch
        self.probing = per_epoch > 1 and not isinstance(
            trial.study.pruner, optuna.pruners.NopPruner
        )

    def _report(self, value: float, epoch: float, control, last: bool = False) -> None:
        """Report and ask the pruner (successive halving records its rungs when asked);
        unless it is the trial's last report (nothing left to save: pruning it would only
        throw its score away), stop training if it says prune."""
        self.epochs_done = epoch
        step = round(epoch * self.per_epoch)
        with_db_retries(lambda: self.trial.report(value, step=step))
        if with_db_retries(self.trial.should_prune) and not last:
            self.pruned = True
            control.should_training_stop = True
            control.should_save = False

    def on_step_end(self, args, state, control, **kwargs):
        point = math.floor((state.epoch or 0) * self.per_epoch + 1e-9)
        if (
            not self.probing
            or point % self.per_epoch == 0
            or point <= self.epochs_done * self.per_epoch
        ):
            return  # an epoch's end (evaluated by the Trainer), or reported already
        with torch.random.fork_rng():  # an evaluation draws a seed: training's RNG stays as is
            metrics = self.trainer.evaluate(metric_key_prefix="probe")
        self._report(float(metrics[f"probe_{self.objective}"]), point / self.per_epoch, control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and f"eval_{self.objective}" in metrics:
            epoch = round(state.epoch)
            value = float(metrics[f"eval_{self.objective}"])
            self._report(value, epoch, control, last=epoch >= args.num_train_epochs)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.pruned:  # stopped within the epoch: nothing more to do in it
            control.should_evaluate = control.should_save = control.should_log = False
