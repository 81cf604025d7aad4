"""One Optuna trial as a Prefect task: train its configuration in a nested MLflow run,
report the objective after each epoch, stop when pruned, and tell Optuna how it ended."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

import optuna
from prefect import task
from prefect.cache_policies import NONE
from prefect.exceptions import TerminationSignal

from tasks import search, tracking
from tasks.config import SearchConfig
from tasks.study_record import STATE_TAG, STUDY_TAG, TRIAL_TAG, trial_description
from tasks.train import train


class SurplusTrial(Exception):
    """A worker asked for a trial after the study already had all it needs."""


@dataclass
class TrialOutcome:
    value: float
    state: str  # COMPLETE or PRUNED
    epochs_trained: int


@dataclass
class TrialInputs:
    """What every trial of one search shares: its config, the study's MLflow run, the model
    and the tokenized data."""

    config: SearchConfig
    client: object  # MlflowClient
    parent_run_id: str
    model_path: str
    tokenizer: object
    tokenized: object  # tasks.tokenization.Tokenized
    label_names: list[str]


@task(name="trial", task_run_name="trial-{trial.number}", cache_policy=NONE)
def run_trial(trial: optuna.Trial, shared: TrialInputs) -> TrialOutcome:
    """Train one trial's configuration, logging to its own nested MLflow run."""
    config, client, number = shared.config, shared.client, trial.number
    params = search.suggest(trial, config)
    output_dir = config.train.output_dir / f"{config.study_name}-trial-{number}"
    trial_config = search.trial_config(config.train, params, output_dir)
    objective = f"eval_{config.train.objective_metric}"
    tags = {STUDY_TAG: config.study_name, TRIAL_TAG: str(number)}
    with tracking.tracked_run(
        client, trial_config.experiment_name, f"trial-{number}", tags, shared.parent_run_id
    ) as run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
        tracking.log_params(client, run_id, {**trial_config.params(), "trial_number": number})
        pruning = search.PruningCallback(trial, config.train.objective_metric)
        try:
            result = train(
                trial_config, shared.model_path, shared.tokenizer, shared.tokenized.datasets,
                shared.label_names, output_dir,
                callbacks=[tracking.EpochMetricsLogger(client, run_id), pruning],
            )  # fmt: skip
        except BaseException:
            client.set_tag(run_id, STATE_TAG, "FAIL")
            raise
        finally:
            shutil.rmtree(output_dir, ignore_errors=True)  # checkpoints are never kept
        values = {round(row["epoch"]): row[objective] for row in result.history if objective in row}
        state = "PRUNED" if pruning.pruned_at is not None else "COMPLETE"
        client.set_tag(run_id, STATE_TAG, state)
        tracking.describe(
            client, run_id, trial_description(number, params, state, objective, values)
        )
        best = max(values.values())
        metrics = {f"best_{objective}": best, "epochs_trained": pruning.epochs_done}
        tracking.log_metrics(client, run_id, metrics)
    return TrialOutcome(best, state, pruning.epochs_done)


def objective_function(study: optuna.Study, shared: TrialInputs):
    """Optuna's objective: a trial task per call, never more trials than the study needs."""
    n_trials = shared.config.n_trials

    def objective(trial: optuna.Trial) -> float:
        if search.claimed_before(study, trial.number) >= n_trials:
            study.stop()
            raise SurplusTrial(f"trial {trial.number}: study already has its trials")
        try:
            outcome = run_trial(trial, shared)
        except TerminationSignal as stop:  # Optuna marks FAIL on KeyboardInterrupt only
            raise KeyboardInterrupt(f"signal {stop.signal}") from stop
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(f"pruned after epoch {outcome.epochs_trained}")
        return outcome.value

    return objective


def stop_when_enough(n_trials: int):
    """Optuna callback: stop this worker once finished and running trials reach the total."""

    def stop(study: optuna.Study, trial) -> None:
        if search.claimed_before(study, sys.maxsize) >= n_trials:
            study.stop()

    return stop
