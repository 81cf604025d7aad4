"""Fan-out of a search's trials over the work pool: N worker flow runs, waited for.

Each worker is a flow run of the `search-worker` deployment, submitted with
`run_deployment` (the work pool's concurrency limit caps how many run at once). A worker
can be lost with its machine: its flow run then stays RUNNING in Prefect while its trial's
heartbeat stops. Such a trial is failed as stale and queued again (`flows.trial.
on_lost_trial`); its worker's flow run is then marked Crashed, so the wait ends. The wait
also ends once the study is complete: worker runs that never started are cancelled, running
ones get WRAP_UP_SECONDS to end by themselves (then they are cancelled too), and
the search flow itself runs whatever the workers left.
"""

from __future__ import annotations

import logging
import time

import optuna
from optuna.trial import TrialState
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Crashed

from tasks import trial_lifecycle as lifecycle
from tasks.config import ConfigError, SearchConfig
from tasks.trial_lifecycle import Next

log = logging.getLogger(__name__)
POLL_SECONDS = 5
WRAP_UP_SECONDS = 120  # a running worker's time to end by itself once the study is complete


def check_deployment(config: SearchConfig) -> None:
    """Refuse a fan-out up front (before any run is opened) when its deployment is missing."""
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(config.worker_deployment)
        except ObjectNotFound:
            raise ConfigError(
                f"parallelism {config.parallelism} needs the deployment "
                f"{config.worker_deployment!r} on the Prefect server: run `finetrack deploy` "
                "and start workers on the pool"
            ) from None


def run_workers(config: SearchConfig, study: optuna.Study) -> None:
    """Submit `config.parallelism` worker flow runs and wait until each has ended."""
    parameters = {"config": config.model_dump(mode="json", exclude_unset=True)}
    ids = [  # timeout 0: submit, do not wait here; each is named search-worker-<study>
        run_deployment(config.worker_deployment, parameters=parameters, timeout=0).id
        for _ in range(config.parallelism)
    ]
    log.info("%d worker flow runs of %s submitted", len(ids), config.worker_deployment)
    shown, done_since, runs = None, None, []
    with get_client(sync_client=True) as client:

        def step() -> Next:  # after the lost trials were failed and queued again
            nonlocal shown, done_since, runs
            runs = [client.read_flow_run(flow_run_id) for flow_run_id in ids]
            for run in lost_workers(study, runs):
                log.warning("worker flow run %s was lost with its trial", run.name)
                message = "lost: its trial went silent and was queued to run again"
                client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            if all(run.state and run.state.is_final() for run in runs):
                return Next.DONE
            if study_done(study, config.n_trials):
                done_since = done_since or time.monotonic()
                wrapping_up = time.monotonic() - done_since < WRAP_UP_SECONDS
                unfinished = [run for run in runs if not (run.state and run.state.is_final())]
                # a worker that ran trials ends by itself once it finds none left; one that
                # never started, or still runs after the wrap-up time (hangs), is cancelled
                needless = [
                    r for r in unfinished if not (wrapping_up and r.state and r.state.is_running())
                ]
                for run in needless:
                    message = "not needed: the study has its trials"
                    client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
                if len(needless) == len(unfinished):
                    return Next.DONE
            progress = (lifecycle.finished_count(study), [run.state.name for run in runs])
            if progress != shown:  # a line when something changed, not every poll
                log.info("%d/%d trials finished; workers: %s", progress[0], config.n_trials,
                         ", ".join(progress[1]))  # fmt: skip
                shown = progress
            return Next.LATER

        lifecycle.wait_for(study, step, POLL_SECONDS)
    log.info("worker flow runs ended: %s", ", ".join(run.state.name for run in runs))


def study_done(study: optuna.Study, n_trials: int) -> bool:
    """`n_trials` finished and nothing running or queued."""
    busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    return not busy and lifecycle.finished_count(study) >= n_trials


def lost_workers(study: optuna.Study, runs: list) -> list:
    """Flow runs still RUNNING in Prefect whose trial was found dead (`flows.trial.
    on_lost_trial` notes each such flow run on the study)."""
    lost = lifecycle.lost_flow_runs(study)
    return [run for run in runs if run.state and run.state.is_running() and str(run.id) in lost]
