"""A small cluster on this machine: a Prefect server, process workers started from their own
working folders (each a copy of the project, as on separate machines), a PostgreSQL study
storage and an `mlflow server` with its own artifact root.

`prefect deployment run 'search/mrpc'` with `parallelism` 2 fans the trials out to two
`search-worker` flow runs; the worker running a trial is killed (SIGKILL, the whole process
group, as when a machine is lost) after that trial's first epoch checkpoint, then restarted.
The study still ends with exactly `n_trials` finished trials, the lost one resumed from its
checkpoint in its own MLflow run, one registered winner, and no run left RUNNING.
"""

import contextlib
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks import trial_lifecycle as lifecycle
from tasks.trial_lifecycle import StudyNote, TrialNote
from tests.support.cluster import Worker, run_deployment, workers
from tests.support.services import mlflow_server

pytestmark = pytest.mark.slow

N_TRIALS = 4


def environ(pid: int) -> list[bytes]:
    """The process's environment as `NAME=value` entries; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return []


def flow_run_processes(flow_run_id: str) -> list[int]:
    """Processes of this machine that run the given Prefect flow run."""
    wanted = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and wanted in environ(int(entry.name))]  # fmt: skip


def machine_of(processes: list[int], workers: list[Worker]) -> Worker:
    """The worker whose checkout runs these processes: a flow run inherits its worker's
    FINETRACK_HOME. (Flow run ids also show up in other workers' logs, so logs can't say.)"""
    homes = {f"FINETRACK_HOME={worker.home}".encode(): worker for worker in workers}
    (machine,) = {homes[entry] for pid in processes for entry in environ(pid) if entry in homes}
    return machine


def alive(pid: int) -> bool:
    """Running, not a zombie (a killed orphan whose exit nobody collected)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def flow_runs(api_url: str, prefix: str) -> list:
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as api:
        runs = api.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=prefix))
        )
    return sorted(runs, key=lambda run: run.name)


def lose_a_machine_mid_trial(search_run, workers, storage: str, tmp_path) -> str:
    """Wait for a trial past its first epoch (checkpoint written), kill the machine running
    it (its worker and flow run), start that worker again; returns the lost flow run's id."""
    deadline = time.monotonic() + 600
    victim = None
    while victim is None:
        assert time.monotonic() < deadline and search_run.poll() is None, "no trial got going"
        time.sleep(1)
        try:
            study = optuna.load_study(study_name="cluster", storage=storage)
        except KeyError:
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            folder = tmp_path / "shared-checkpoints" / f"cluster-trial-{trial.number}"
            epochs = lifecycle.epoch_values(trial, lifecycle.reports_per_epoch(study))
            if 1 in epochs and any(folder.glob("checkpoint-*/trainer_state.json")):
                victim = trial
                break
    flow_run_id = victim.user_attrs[TrialNote.FLOW_RUN]
    processes = flow_run_processes(flow_run_id)
    assert processes, "the trial's flow run process was not found"
    machine = machine_of(processes, workers)
    machine.kill()
    for pid in processes:  # the flow run too, should it run in a session of its own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    assert not [pid for pid in processes if alive(pid)]
    machine.start()  # the machine comes back

    return flow_run_id


@pytest.fixture
def cluster(prefect_server, postgres_url, tmp_path):
    """Three workers (the search and its two trial workers, one run each), PostgreSQL for
    the study, an MLflow server with its own artifact root."""
    with (
        workers(prefect_server.env, tmp_path, 3) as started,
        mlflow_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts") as url,
    ):
        yield prefect_server.env, started, url, postgres_url


def test_search_fans_out_and_survives_a_lost_worker(cluster, mrpc_dir, tmp_path):
    env, workers, tracking_uri, storage = cluster
    config = {
        "study_name": "cluster",
        "storage": storage,
        "n_trials": N_TRIALS,
        "num_epochs_range": {"low": 2, "high": 2},
        "pruner": "none",
        "parallelism": 2,
        "heartbeat_interval": 1,
        "grace_period": 4,
        "confirm_top_k": 1,
        "confirm_seeds": 1,
        "train": {
            "data_dir": str(mrpc_dir),
            "max_train_samples": 64,
            "max_eval_samples": 20,
            "eval_batch_size": 16,
            "tracking_uri": tracking_uri,
            "experiment_name": "cluster",
            "output_dir": str(tmp_path / "shared-checkpoints"),
            "cache_dir": str(tmp_path / "shared-cache"),
            "registered_model_name": "cluster-model",
        },
    }
    search_run = run_deployment(env, "search/mrpc", config, timeout=1200)
    try:
        flow_run_id = lose_a_machine_mid_trial(search_run, workers, storage, tmp_path)
        output, _ = search_run.communicate(timeout=1500)
    finally:
        if search_run.poll() is None:
            search_run.kill()
    assert search_run.returncode == 0 and "Completed" in output, output[-3000:]
    # the study: exactly n_trials finished, the lost one resumed from its epoch checkpoint
    study = optuna.load_study(study_name="cluster", storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == N_TRIALS
    (lost,) = [t for t in study.trials if t.user_attrs.get(TrialNote.FLOW_RUN) == flow_run_id
               and t.state == TrialState.FAIL]  # fmt: skip
    (retry,) = [t for t in study.trials if t.user_attrs.get(TrialNote.RETRY_OF) == lost.number]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs[TrialNote.RESUMED_FROM] == 1
    assert retry.params == lost.params
    print(f"trial {lost.number} lost after its epoch-1 checkpoint; trial {retry.number} resumed it")

    # Prefect: two worker flow runs on different machines that overlapped in time; the lost
    # one marked Crashed by the search, the search itself Completed
    runs = flow_runs(env["PREFECT_API_URL"], "search-worker-cluster")
    assert len(runs) == 2
    first, second = runs
    assert first.start_time < second.end_time and second.start_time < first.end_time
    by_state = {run.state.type.value: run for run in runs}
    assert set(by_state) == {"CRASHED", "COMPLETED"}
    assert str(by_state["CRASHED"].id) == flow_run_id
    machines = {w.name for run in runs for w in workers if str(run.id) in w.log.read_text()}
    assert len(machines) == 2

    # MLflow: the study run, one run per trial configuration (the retry reuses the lost
    # trial's), every epoch logged once, one confirmation run; nothing left RUNNING
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("cluster")
    all_runs = client.search_runs([experiment.experiment_id])
    assert not [r.info.run_name for r in all_runs if r.info.status != "FINISHED"]
    trial_runs = [r for r in all_runs if "finetrack.trial_number" in r.data.tags]
    assert len(trial_runs) == N_TRIALS
    (resumed,) = [r for r in trial_runs if r.info.run_id == lost.user_attrs["mlflow_run_id"]]
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "eval_f1")] == [1, 2]
    parent = study.user_attrs[StudyNote.STUDY_RUN]
    assert {r.data.tags.get("mlflow.parentRunId") for r in trial_runs} == {parent}
    assert len([r for r in all_runs if r.info.run_name.startswith("confirm-")]) == 1
    versions = client.search_model_versions("name='cluster-model'")
    assert len(versions) == 1
    assert client.get_model_version_by_alias("cluster-model", "champion").version == "1"
