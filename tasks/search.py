"""Optuna pieces of the hyperparameter search: storage, sampler, pruner, space, pruning.

The study lives in an RDB storage (SQLite file by default, any SQLAlchemy URL such as
PostgreSQL), with heartbeats so that a trial whose worker died is marked FAIL and the
study can be resumed or shared by several workers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy.exc
import torch
from optuna.trial import FrozenTrial, TrialState

from tasks.config import ConfigError, FineTuneConfig, SearchConfig
from tasks.tracking import sqlite_creation_lock
from tasks.train import TrainerAware

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_STORAGE = "sqlite:///optuna.db"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
SPACE_ATTR = "finetrack_space"
STUDY_RUN_ATTR = "mlflow_parent_run_id"  # the study's MLflow run, parent of every trial run
OBJECTIVE_ATTR = "finetrack_objective"
REPORTS_ATTR = "finetrack_reports_per_epoch"  # Optuna steps per epoch in this study
# user attributes of a trial run again after its worker was lost
RETRY_OF = "finetrack_retry_of"  # the number of the lost trial
ORIGIN = "finetrack_origin"  # the first trial of the chain: its checkpoints and MLflow run
RESUMED_FROM = "finetrack_resumed_from_epoch"
FLOW_RUN = "finetrack_flow_run"  # the Prefect flow run that ran the trial
MLFLOW_RUN = "mlflow_run_id"  # the trial's MLflow run
CHAIN_RUN = "finetrack_chain_run"  # a retry's MLflow run: the first attempt's
LOST_PREFIX = "finetrack_lost_trial_"  # study attribute per lost trial: its flow run


def resolve_storage(configured: str | None) -> str:
    """Config first, then $OPTUNA_STORAGE, then a SQLite file in the working folder."""
    return configured or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE


def make_storage(
    config: SearchConfig, on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None
) -> optuna.storages.RDBStorage:
    """RDB storage with heartbeats; `on_stale_trial` runs for each trial found dead."""
    url = resolve_storage(config.storage)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:  # a database server may restart: test pooled connections before use
        engine_kwargs = {"pool_pre_ping": True}
    with sqlite_creation_lock(url):
        return ResilientStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
            heartbeat_stale_trial_callback=on_stale_trial,
        )


class ResilientStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat survives a database restart.

    Optuna records heartbeats in a thread that ends at the first error: after a restart of
    the database server the trial would fall silent while still training, be declared lost
    and run twice. Here a failed beat is logged and the next one tried on time."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except optuna.exceptions.StorageInternalError as error:
            log.warning("trial heartbeat not recorded (%s); retrying", unreachable(error))


DB_RETRY_SECONDS = (1, 2, 4, 8, 16)  # about half a minute: a database server's restart


def unreachable(error: Exception) -> str | None:
    """What the database driver said, when Optuna's storage error is a lost connection."""
    cause = error.__cause__
    if isinstance(error, optuna.exceptions.StorageInternalError) and isinstance(
        cause, sqlalchemy.exc.OperationalError
    ):
        return str(cause.orig).strip().splitlines()[0]
    return None


def with_db_retries(call: Callable[[], T]) -> T:
    """`call()`, tried again while the study's database is unreachable (restarting)."""
    for pause in DB_RETRY_SECONDS:
        try:
            return call()
        except optuna.exceptions.StorageInternalError as error:
            if unreachable(error) is None:
                raise
            log.warning("study database unreachable (%s); retrying in %d s", unreachable(error),
                        pause)  # fmt: skip
            time.sleep(pause)
    return call()


def make_sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    """Seeded sampler, so a study with the same settings proposes the same trials."""
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.train.seed)
    return optuna.samplers.TPESampler(seed=config.train.seed, n_startup_trials=4)


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


def open_study(
    config: SearchConfig,
    on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    force: bool = False,
) -> optuna.Study:
    """Create or resume the study; a resumed study must have the same search space."""
    study = optuna.create_study(
        study_name=config.study_name,
        storage=make_storage(config, on_stale_trial),
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        direction="maximize",  # both objectives (accuracy, F1) grow with quality
        load_if_exists=True,
    )
    space = json.dumps(config.space(), sort_keys=True)
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None or force:
        study.set_user_attr(SPACE_ATTR, space)
    elif stored != space:
        raise ConfigError(
            f"study {config.study_name!r} exists with another search space ({stored}); "
            "use another study name, or --force to continue it with the new space"
        )
    objective = f"eval_{config.train.objective_metric}"
    kept = study.user_attrs.get(OBJECTIVE_ATTR, "eval_f1" if study.trials else None)
    if kept not in (None, objective) and not force:
        raise ConfigError(
            f"study {config.study_name!r} optimises {kept}, not {objective}: its trial values "
            "would not compare; use another study name (or --force)"
        )
    study.set_user_attr(OBJECTIVE_ATTR, objective)
    kept = study.user_attrs.get(REPORTS_ATTR, 1 if study.trials else None)  # older: per epoch
    if kept not in (None, config.reports_per_epoch) and not force:
        raise ConfigError(
            f"study {config.study_name!r} reports {kept} time(s) per epoch, not "
            f"{config.reports_per_epoch}: its pruner would compare different points of "
            f"training; use --reports-per-epoch {kept}, another study name (or --force)"
        )
    study.set_user_attr(REPORTS_ATTR, config.reports_per_epoch)
    return study


def reports_per_epoch(study: optuna.Study) -> int:
    """Optuna steps per epoch in this study (1 in studies from before sub-epoch reports)."""
    return int(study.user_attrs.get(REPORTS_ATTR, 1))


def epoch_values(trial: FrozenTrial, per_epoch: int) -> dict[int, float]:
    """The objective the trial reported at each epoch's end, by epoch."""
    values = trial.intermediate_values.items()
    return {step // per_epoch: value for step, value in values if step % per_epoch == 0}


def suggest(trial: optuna.Trial, config: SearchConfig) -> dict[str, float | int]:
    """The trial's hyperparameters, drawn from the configured space."""
    lr, epochs = config.learning_rate_range, config.num_epochs_range
    params: dict[str, float | int] = {
        "learning_rate": trial.suggest_float("learning_rate", lr.low, lr.high, log=lr.log),
        "num_epochs": trial.suggest_int("num_epochs", epochs.low, epochs.high),
    }
    if config.batch_size_choices:
        params["batch_size"] = trial.suggest_categorical("batch_size", config.batch_size_choices)
    for name in ("warmup_ratio", "weight_decay"):
        bounds = getattr(config, f"{name}_range")
        if bounds is not None:
            params[name] = trial.suggest_float(name, bounds.low, bounds.high, log=bounds.log)
    return params


def trial_config(base: FineTuneConfig, params: dict, output_dir: Path) -> FineTuneConfig:
    """The shared training settings with one trial's hyperparameters put in (validated)."""
    return base.with_settings(**params, output_dir=output_dir, log_model=False)


def origin(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial whose checkpoints folder and MLflow run a (retried) trial continues."""
    return int(trial.user_attrs.get(ORIGIN, trial.number))


def checkpoints_dir(config: SearchConfig, trial: optuna.Trial | FrozenTrial) -> Path:
    """Where a trial keeps its epoch checkpoints until it ends: under train.output_dir, which
    every worker of a study must see (shared storage) for a lost trial to resume."""
    return config.train.output_dir / f"{config.study_name}-trial-{origin(trial)}"


def enqueue_retry(study: optuna.Study, lost: optuna.Trial | FrozenTrial, retries: int) -> bool:
    """Queue the lost trial's configuration to run again (first in line for the next worker),
    unless it was queued already (a trial stopped, then killed, is reported twice) or its
    chain has been retried `retries` times. The chain's MLflow run goes with it."""
    first = origin(lost)
    trials = study.get_trials(deepcopy=False)
    if any(t.user_attrs.get(RETRY_OF) == lost.number for t in trials):
        return True
    done = sum(1 for t in trials if RETRY_OF in t.user_attrs and origin(t) == first)
    if done >= retries:
        log.warning("trial %d lost; not retried (%d retries so far)", lost.number, done)
        return False
    attrs = {RETRY_OF: lost.number, ORIGIN: first}
    run_id = lost.user_attrs.get(MLFLOW_RUN) or lost.user_attrs.get(CHAIN_RUN)
    if run_id:
        attrs[CHAIN_RUN] = run_id
    study.enqueue_trial(dict(lost.params), user_attrs=attrs, skip_if_exists=False)
    log.warning("trial %d lost: queued to run again from its last checkpoint", lost.number)
    return True


def retried(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> bool:
    """True once a retry of this trial is queued: its checkpoints are the retry's now."""
    return any(t.user_attrs.get(RETRY_OF) == trial.number for t in study.get_trials(deepcopy=False))


@dataclass
class ResumePoint:
    """Where a retried trial picks up: the lost trial's MLflow run, its last epoch checkpoint
    (None: start over), and the objective it had reported up to that epoch."""

    run_id: str | None
    checkpoint: str | None
    epoch: int
    reported: dict[int, float]


def resume_point(study: optuna.Study, trial: optuna.Trial, folder: Path) -> ResumePoint | None:
    """None for a fresh trial; for a retry, what the lost trial left behind."""
    if RETRY_OF not in trial.user_attrs:
        return None
    lost = study.get_trials(deepcopy=False)[trial.user_attrs[RETRY_OF]]  # numbered from 0
    checkpoint, epoch = last_complete_checkpoint(folder)
    # the lost attempt reported its predecessors' epochs again: it holds the whole chain's
    last = epoch * reports_per_epoch(study)
    reported = {step: v for step, v in lost.intermediate_values.items() if step <= last}
    run_id = trial.user_attrs.get(CHAIN_RUN) or lost.user_attrs.get(MLFLOW_RUN)
    return ResumePoint(run_id, checkpoint, epoch, reported)


def last_complete_checkpoint(folder: Path) -> tuple[str | None, int]:
    """The newest `checkpoint-<step>` whose trainer state was written (the Trainer writes it
    last: a worker lost while saving leaves a checkpoint without it) and its epoch."""
    steps = sorted(
        (int(path.name.split("-")[1]), path)
        for path in folder.glob("checkpoint-*")
        if path.name.split("-")[1].isdigit()
    )
    for _, path in reversed(steps):
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(path), round(state["epoch"])
    return None, 0


def claimed_before(study: optuna.Study, number: int, queued: bool = False) -> int:
    """Trials numbered below `number` that finished or still run (they count to the total),
    and with `queued` those waiting in the queue too (a retry queued meanwhile will run)."""
    states = (*COUNTED, TrialState.RUNNING, *((TrialState.WAITING,) if queued else ()))
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if t.number < number)


def epochs_trained(trial: FrozenTrial, per_epoch: int) -> float:
    """Epochs this attempt trained, up to its last report (a pruned trial may stop within an
    epoch): a retry re-reports the epochs it resumed after."""
    reached = max(trial.intermediate_values, default=0) / per_epoch
    return reached - int(trial.user_attrs.get(RESUMED_FROM, 0))


def finished_count(study: optuna.Study) -> int:
    """Completed plus pruned trials: what `n_trials` counts."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


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


def top_configurations(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The K best completed trials, best first."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(completed, key=lambda t: t.value, reverse=True)[:k]


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's history, importance, learning-curve and parallel-coordinate plots as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    makers = {
        "optimization_history": plots.plot_optimization_history,
        "intermediate_values": plots.plot_intermediate_values,
        "parallel_coordinate": plots.plot_parallel_coordinate,
    }
    if completed >= 2:
        makers["param_importances"] = plots.plot_param_importances
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, make in makers.items():
        try:
            axes = make(study)
        except (ValueError, RuntimeError) as error:  # e.g. too few trials for a plot
            log.warning("plot %s skipped: %s", name, error)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        saved.append(path)
    return saved
