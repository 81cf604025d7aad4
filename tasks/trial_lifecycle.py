"""A trial's life, in one place: where it stands (`Phase`), the moves between phases, the notes
each move leaves on the Optuna trial and study, and the one wait for trials that run elsewhere.

    QUEUED ──> RUNNING ──> COMPLETE | PRUNED | FAILED
                  └──────> LOST ──> RETRIED: its configuration QUEUED again as a new trial,
    QUEUED (a retry) ──> RESUMED ──> (as RUNNING)   which goes on from the lost one's last
                                                    epoch checkpoint, in its MLflow run

A trial is lost when its worker dies (its heartbeat stops and Optuna fails it as stale) or is
stopped (killed, cancelled); up to `trial_retries` times per chain it is queued again. A chain
keeps the checkpoints folder and the MLflow run of its first attempt (its origin).

Optuna knows WAITING, RUNNING, COMPLETE, PRUNED and FAIL; the rest is read from the notes,
Optuna user attributes stored under the names they have always had (older studies resume).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from tasks.config import SearchConfig

log = logging.getLogger(__name__)


class Phase(str, Enum):
    """Where a trial stands. The ends are also its MLflow run's `finetrack.trial_state` tag."""

    QUEUED = "QUEUED"  # waiting for a worker: a warm start, or a retry
    RUNNING = "RUNNING"
    RESUMED = "RESUMED"  # a retry running on from its lost attempt's last epoch checkpoint
    LOST = "LOST"  # its worker went silent, and it is not run again (retries used up)
    RETRIED = "RETRIED"  # lost, and queued to run again
    PRUNED = "PRUNED"
    COMPLETE = "COMPLETE"
    FAILED = "FAIL"  # ended by an error, or stopped and not run again

    def __str__(self) -> str:
        return self.value


_ENDS = frozenset({Phase.COMPLETE, Phase.PRUNED, Phase.FAILED, Phase.LOST, Phase.RETRIED})
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.RUNNING, Phase.RESUMED}),
    Phase.RUNNING: _ENDS - {Phase.RETRIED},
    Phase.RESUMED: _ENDS - {Phase.RETRIED},
    Phase.LOST: frozenset({Phase.RETRIED}),
    Phase.RETRIED: frozenset(),
    Phase.PRUNED: frozenset(),
    Phase.COMPLETE: frozenset(),
    Phase.FAILED: frozenset(),
}


class StudyNote(str, Enum):
    """User attributes finetrack sets on a study."""

    SPACE = "finetrack_space"  # the search space, compared when the study is resumed
    OBJECTIVE = "finetrack_objective"  # the validation metric the trial values are
    REPORTS = "finetrack_reports_per_epoch"  # Optuna steps per epoch in this study
    STUDY_RUN = "mlflow_parent_run_id"  # the study's MLflow run, parent of every trial run
    WARM_START = "finetrack_warm_start"  # what the warm start queued, from where
    LOST = "finetrack_lost_trial_"  # + trial number: the flow run of a trial found silent


class TrialNote(str, Enum):
    """User attributes finetrack sets on a trial."""

    MLFLOW_RUN = "mlflow_run_id"  # the trial's MLflow run
    FLOW_RUN = "finetrack_flow_run"  # the Prefect flow run that runs the trial
    WARM_START = "finetrack_warm_start_source"  # where a queued trial's params came from
    # on a retry
    RETRY_OF = "finetrack_retry_of"  # the number of the lost trial
    ORIGIN = "finetrack_origin"  # the chain's first trial: its checkpoints and MLflow run
    CHAIN_RUN = "finetrack_chain_run"  # the chain's MLflow run
    RESUMED_FROM = "finetrack_resumed_from_epoch"  # the checkpoint's epoch it went on from


COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # what `n_trials` counts
_OPTUNA_PHASES = {
    TrialState.WAITING: Phase.QUEUED,
    TrialState.COMPLETE: Phase.COMPLETE,
    TrialState.PRUNED: Phase.PRUNED,
}


def phase(study: optuna.Study, trial: FrozenTrial) -> Phase:
    """Where the trial stands, from Optuna's state and finetrack's notes."""
    if trial.state in _OPTUNA_PHASES:
        return _OPTUNA_PHASES[trial.state]
    if trial.state == TrialState.RUNNING:
        return Phase.RESUMED if TrialNote.RESUMED_FROM in trial.user_attrs else Phase.RUNNING
    if retried(study, trial):
        return Phase.RETRIED
    return Phase.LOST if _lost_key(trial) in study.user_attrs else Phase.FAILED


def ended(pruned: bool) -> Phase:
    """How a trial that trained to its end (or was pruned) ends."""
    return Phase.PRUNED if pruned else Phase.COMPLETE


# the moves, with the notes they leave


def started(trial: optuna.Trial, mlflow_run_id: str, flow_run_id: str | None) -> None:
    """QUEUED -> RUNNING: the trial's MLflow run (and Prefect flow run) noted on it."""
    trial.set_user_attr(TrialNote.MLFLOW_RUN.value, mlflow_run_id)
    if flow_run_id:
        trial.set_user_attr(TrialNote.FLOW_RUN.value, flow_run_id)


def resumed(trial: optuna.Trial, epoch: int) -> None:
    """QUEUED -> RESUMED: a retry goes on after `epoch`."""
    trial.set_user_attr(TrialNote.RESUMED_FROM.value, epoch)


def note_lost(study: optuna.Study, trial: FrozenTrial) -> None:
    """RUNNING -> LOST: a trial found silent; its flow run is noted (see `lost_flow_runs`)."""
    study.set_user_attr(_lost_key(trial), trial.user_attrs.get(TrialNote.FLOW_RUN, ""))


def enqueue_retry(study: optuna.Study, lost: optuna.Trial | FrozenTrial, retries: int) -> bool:
    """LOST -> RETRIED: queue the lost trial's configuration to run again (first in line for
    the next worker), unless it was queued already (a trial stopped, then killed, is reported
    twice) or its chain has been retried `retries` times. The chain's MLflow run goes with it."""
    first = origin(lost)
    trials = study.get_trials(deepcopy=False)
    if any(retry_of(t) == lost.number for t in trials):
        return True
    done = sum(1 for t in trials if retry_of(t) is not None and origin(t) == first)
    if done >= retries:
        log.warning("trial %d lost; not retried (%d retries so far)", lost.number, done)
        return False
    attrs = {TrialNote.RETRY_OF.value: lost.number, TrialNote.ORIGIN.value: first}
    run_id = lost.user_attrs.get(TrialNote.MLFLOW_RUN) or lost.user_attrs.get(TrialNote.CHAIN_RUN)
    if run_id:
        attrs[TrialNote.CHAIN_RUN.value] = run_id
    study.enqueue_trial(dict(lost.params), user_attrs=attrs, skip_if_exists=False)
    log.warning("trial %d lost: queued to run again from its last checkpoint", lost.number)
    return True


# what the notes tell


def _lost_key(trial: optuna.Trial | FrozenTrial) -> str:
    return f"{StudyNote.LOST.value}{trial.number}"


def lost_flow_runs(study: optuna.Study) -> set[str]:
    """The flow runs of the trials found silent (their workers were lost)."""
    prefix = StudyNote.LOST.value
    return {value for key, value in study.user_attrs.items() if key.startswith(prefix)}


def retry_of(trial: optuna.Trial | FrozenTrial) -> int | None:
    """The number of the lost trial this one runs again (None: a first attempt)."""
    number = trial.user_attrs.get(TrialNote.RETRY_OF)
    return None if number is None else int(number)


def retried(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> bool:
    """True once a retry of this trial is queued: its checkpoints are the retry's now."""
    return any(retry_of(t) == trial.number for t in study.get_trials(deepcopy=False))


def origin(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial whose checkpoints folder and MLflow run a (retried) trial continues."""
    return int(trial.user_attrs.get(TrialNote.ORIGIN, trial.number))


def checkpoints_dir(config: SearchConfig, trial: optuna.Trial | FrozenTrial) -> Path:
    """Where a trial keeps its epoch checkpoints until it ends: under train.output_dir, which
    every worker of a study must see (shared storage) for a lost trial to resume."""
    return config.train.output_dir / f"{config.study_name}-trial-{origin(trial)}"


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
    number = retry_of(trial)
    if number is None:
        return None
    lost = study.get_trials(deepcopy=False)[number]  # numbered from 0
    checkpoint, epoch = last_complete_checkpoint(folder)
    # the lost attempt reported its predecessors' epochs again: it holds the whole chain's
    last = epoch * reports_per_epoch(study)
    reported = {step: v for step, v in lost.intermediate_values.items() if step <= last}
    run_id = trial.user_attrs.get(TrialNote.CHAIN_RUN) or lost.user_attrs.get(TrialNote.MLFLOW_RUN)
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


def reports_per_epoch(study: optuna.Study) -> int:
    """Optuna steps per epoch in this study (1 in studies from before sub-epoch reports)."""
    return int(study.user_attrs.get(StudyNote.REPORTS, 1))


def epoch_values(trial: FrozenTrial, per_epoch: int) -> dict[int, float]:
    """The objective the trial reported at each epoch's end, by epoch."""
    values = trial.intermediate_values.items()
    return {step // per_epoch: value for step, value in values if step % per_epoch == 0}


def epochs_trained(trial: FrozenTrial, per_epoch: int) -> float:
    """Epochs this attempt trained, up to its last report (a pruned trial may stop within an
    epoch): a retry re-reports the epochs it resumed after."""
    reached = max(trial.intermediate_values, default=0) / per_epoch
    return reached - int(trial.user_attrs.get(TrialNote.RESUMED_FROM, 0))


def finished_count(study: optuna.Study) -> int:
    """Completed plus pruned trials: what `n_trials` counts."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def claimed_before(study: optuna.Study, number: int, queued: bool = False) -> int:
    """Trials numbered below `number` that finished or still run (they count to the total),
    and with `queued` those waiting in the queue too (a retry queued meanwhile will run)."""
    states = (*COUNTED, TrialState.RUNNING, *((TrialState.WAITING,) if queued else ()))
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if t.number < number)


def running(study: optuna.Study) -> list[FrozenTrial]:
    """Trials running now, here or in other workers."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


# the one wait


class Next(Enum):
    """What a `wait_for` step asks for."""

    DONE = "done"  # stop waiting
    AGAIN = "again"  # it did some work: look again at once
    LATER = "later"  # nothing to do yet: look again after the poll interval


def wait_for(study: optuna.Study, step: Callable[[], Next], poll_seconds: float) -> None:
    """Call `step` until it says DONE. Before each call, trials whose heartbeat stopped are
    failed as stale: Optuna calls the storage's stale-trial callback for each (the search's
    `on_lost_trial`), which queues its retry and notes it lost."""
    while True:
        optuna.storages.fail_stale_trials(study)
        answer = step()
        if answer is Next.DONE:
            return
        if answer is Next.LATER:
            time.sleep(poll_seconds)
