"""One Optuna trial as a Prefect task: train its configuration in a nested MLflow run,
report the objective after each epoch, stop when pruned, and tell Optuna how it ended."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState
from prefect import task
from prefect.cache_policies import NONE
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run

from flows.steps import named_by_config, prepare
from tasks import provenance, search, search_space, tracking
from tasks import trial_lifecycle as lifecycle
from tasks.config import SearchConfig
from tasks.prepared import Prepared
from tasks.pruning import PruningCallback
from tasks.study_record import (
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    close_stale_trial_run,
    trial_description,
)
from tasks.train import train
from tasks.trial_lifecycle import Next, Phase

log = logging.getLogger(__name__)


class SurplusTrial(Exception):
    """A worker asked for a trial after the study already had all it needs."""


@dataclass
class TrialOutcome:
    value: float | None  # None: pruned before its first epoch ended
    state: Phase  # COMPLETE or PRUNED
    epochs_trained: float


@dataclass
class TrialInputs:
    """What every trial of one search shares: its config, the study's MLflow run, and the
    inputs prepared once (model, data, tokenized splits), which its confirmation runs share
    too."""

    config: SearchConfig
    client: object  # MlflowClient
    parent_run_id: str | None
    prepared: Prepared

    @property
    def record(self) -> dict[str, str]:
        """Data source and fingerprint, library versions: each trial's params."""
        data = self.prepared.data
        return {
            "data_source": data.source,
            "data_fingerprint": data.fingerprint,
            **tracking.library_versions(),
        }


def study_run_name(prefix: str) -> Callable[[], str]:
    """A flow run name from the study's name in the run's `config` parameter."""
    return named_by_config(
        lambda config: f"{prefix}-{config.get('study_name', 'finetrack-search')}"
    )


def open_search(config: SearchConfig, force: bool = False):
    """What the search flow and its workers start from: the tracking client, the study
    (created or resumed), the data set and the trials' shared inputs (no study run yet)."""
    client = tracking.connect(config.train.tracking_uri)
    prepared = prepare(config.train)
    config = config.model_copy(update={"train": prepared.config})  # validated as it was
    study = search.open_study(config, on_lost_trial(client, config), force=force)
    return study, prepared.data, TrialInputs(config, client, None, prepared)


@task(name="trial", task_run_name="trial-{trial.number}", cache_policy=NONE)
def run_trial(trial: optuna.Trial, shared: TrialInputs) -> TrialOutcome:
    """Train one trial's configuration, logging to its own nested MLflow run.

    Checkpoints are written every epoch and kept while the trial runs; a trial retried after
    its worker was lost goes on from the last one, in the lost trial's MLflow run.
    """
    config, client, number = shared.config, shared.client, trial.number
    params = search_space.suggest(trial, config)
    output_dir = lifecycle.checkpoints_dir(config, trial)
    trial_config = search_space.trial_config(config.train, params, output_dir)
    objective = f"eval_{config.train.objective_metric}"
    resume = lifecycle.resume_point(trial.study, trial, output_dir)
    for step, value in (resume.reported if resume else {}).items():
        trial.report(value, step)  # the epochs that need not be trained again
    tags = {
        STUDY_TAG: config.study_name,
        TRIAL_TAG: str(number),
        **provenance.tags(config.train.threads),
    }
    with tracking.tracked_run(
        client, trial_config.experiment_name, f"trial-{number}", tags, shared.parent_run_id,
        resume_run_id=resume.run_id if resume else None,
    ) as run_id:  # fmt: skip
        lifecycle.started(trial, run_id, flow_run.get_id())
        params_logged = {**trial_config.params(), "trial_number": number, **shared.record}
        if resume:
            client.set_tag(run_id, TRIAL_TAG, str(number))
            lifecycle.resumed(trial, resume.epoch)
            tracking.log_metrics(client, run_id, {"resumed_from_epoch": resume.epoch})
            log.info("trial %d resumes from epoch %d (%s)", number, resume.epoch, resume.checkpoint)
            params_logged = {f"retry_{number}_of": lifecycle.retry_of(trial)}
        tracking.log_params(client, run_id, params_logged)
        pruning = PruningCallback(
            trial, config.train.objective_metric, lifecycle.reports_per_epoch(trial.study),
            start_epoch=resume.epoch if resume else 0,
        )  # fmt: skip
        try:
            result = train(
                trial_config, shared.prepared.model_path, shared.prepared.tokenizer,
                shared.prepared.tokenized.datasets, shared.prepared.label_names, output_dir,
                callbacks=[tracking.EpochMetricsLogger(client, run_id), pruning],
                resumable=True, resume_from_checkpoint=resume.checkpoint if resume else None,
            )  # fmt: skip
        except Exception:
            client.set_tag(run_id, STATE_TAG, Phase.FAILED.value)
            if not lifecycle.retried(trial.study, trial):  # else declared lost: the retry's now
                shutil.rmtree(output_dir, ignore_errors=True)  # an error: nothing to resume
            raise
        except BaseException:  # stopped from outside: run again from the last checkpoint
            client.set_tag(run_id, STATE_TAG, Phase.FAILED.value)
            lifecycle.enqueue_retry(trial.study, trial, config.trial_retries)
            raise
        shutil.rmtree(output_dir, ignore_errors=True)  # the trial's model is never kept
        tracking.log_params(client, run_id, result.decided)
        values = {round(row["epoch"]): row[objective] for row in result.history if objective in row}
        state = lifecycle.ended(pruning.pruned)
        client.set_tag(run_id, STATE_TAG, state.value)
        description = trial_description(
            number, params, state, objective, values, pruning.epochs_done
        )
        if resume:
            description += (
                f" Retry of trial {lifecycle.retry_of(trial)}, whose worker was lost: "
                f"resumed from epoch {resume.epoch}."
            )
        tracking.describe(client, run_id, description)
        best = max(values.values(), default=None)
        metrics = {"epochs_trained": pruning.epochs_done}
        if values:
            metrics[f"best_{objective}"] = best
        tracking.log_metrics(client, run_id, metrics)
    return TrialOutcome(best, state, pruning.epochs_done)


def objective_function(study: optuna.Study, shared: TrialInputs):
    """Optuna's objective: a trial task per call, never more trials than the study needs."""
    n_trials = shared.config.n_trials

    def objective(trial: optuna.Trial) -> float:
        if lifecycle.claimed_before(study, trial.number, queued=True) >= n_trials:
            study.stop()
            raise SurplusTrial(f"trial {trial.number}: study already has its trials")
        try:
            outcome = run_trial(trial, shared)
        except TerminationSignal as stop:  # Optuna marks FAIL on KeyboardInterrupt only
            raise KeyboardInterrupt(f"signal {stop.signal}") from stop
        if outcome.state is Phase.PRUNED:
            raise optuna.TrialPruned(f"pruned after {outcome.epochs_trained:g} epoch(s)")
        return outcome.value

    return objective


def stop_when_enough(n_trials: int):
    """Optuna callback: stop this worker once finished and running trials reach the total."""

    def stop(study: optuna.Study, trial) -> None:
        if lifecycle.claimed_before(study, sys.maxsize) >= n_trials:
            study.stop()

    return stop


def on_lost_trial(client, config: SearchConfig):
    """Optuna calls this for a trial whose worker went silent (`study_storage.make_storage`),
    once, in the process that marked it FAIL: queue it to run again from its last checkpoint,
    note its flow run as lost (`flows.fan_out` reads it), close its MLflow run. One failing
    step does not stop the others; checkpoints go only when no retry will read them."""
    close = close_stale_trial_run(client, config.train.experiment_name)

    def handle(study: optuna.Study, trial) -> None:
        queued = True  # unless known otherwise, keep the checkpoints
        try:
            queued = lifecycle.enqueue_retry(study, trial, config.trial_retries)
            lifecycle.note_lost(study, trial)
        except Exception:
            log.exception("trial %d lost: its retry could not be queued", trial.number)
        try:
            close(study, trial)
        except Exception:
            log.exception("trial %d lost: its MLflow run could not be closed", trial.number)
        if not queued:
            shutil.rmtree(lifecycle.checkpoints_dir(config, trial), ignore_errors=True)

    return handle


def run_trials(study: optuna.Study, shared: TrialInputs) -> None:
    """Run trials in this process until the study has `n_trials` finished ones (retried
    trials first: Optuna hands out queued trials before sampling new ones)."""
    n_trials = shared.config.n_trials
    remaining = n_trials - lifecycle.finished_count(study)
    log.info("study %s: %d trial(s) to run", study.study_name, max(remaining, 0))
    if remaining > 0:
        study.optimize(
            objective_function(study, shared),
            n_trials=remaining,
            callbacks=[stop_when_enough(n_trials)],
            catch=(Exception,),
            gc_after_trial=True,
        )


def finish_study(study: optuna.Study, shared: TrialInputs, poll_seconds: float = 5) -> None:
    """Run trials until the study has `n_trials` finished ones and none runs elsewhere.

    This process stops taking trials once the finished and running ones make the total, but
    a trial running in another worker may still fail or be lost: wait for those (a lost one
    is found stale and queued again) and run whatever they leave."""
    n_trials = shared.config.n_trials

    def step() -> Next:
        queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if queued or lifecycle.claimed_before(study, sys.maxsize) < n_trials:
            finished = lifecycle.finished_count(study)
            run_trials(study, shared)
            if lifecycle.finished_count(study) == finished and not lifecycle.running(study):
                log.warning("study %s: no trial finished in this pass; %d of %d finished",
                            study.study_name, finished, n_trials)  # fmt: skip
                return Next.DONE
            return Next.AGAIN
        if not lifecycle.running(study):
            return Next.DONE
        log.info("waiting for %d trial(s) running in other workers", len(lifecycle.running(study)))
        return Next.LATER

    lifecycle.wait_for(study, step, poll_seconds)
