"""The search flow on tiny MRPC slices: nesting, pruning, resume after a kill, two workers."""

import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import scipy.stats
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from oracles import check_study_record, prefect_artifact

from flows.search import search_flow
from tasks import pruning
from tasks import trial_lifecycle as lifecycle
from tasks.config import IntRange, SearchConfig
from tasks.registry import champion_version
from tasks.study_record import STATE_TAG, STUDY_TAG, TRIAL_TAG
from tasks.trial_lifecycle import TrialNote
from tests.support.data import small_train_config
from tests.support.search import (
    search_command,
    trial_runs,
    trials_in,
    wait_for,
)
from tests.support.services import browser_page, mlflow_server

pytestmark = pytest.mark.slow


def tiny_search(mrpc_dir: Path, tmp_path: Path, objective: str = "f1", **settings):
    train = small_train_config(
        mrpc_dir,
        tmp_path,
        max_train_samples=24,
        max_eval_samples=20,  # two evaluation batches of 16 and 4
        experiment_name="search-test",
        registered_model_name="tiny-model",
        objective_metric=objective,
    )
    values = {
        "train": train,
        "storage": f"sqlite:///{tmp_path}/optuna.db",
        "study_name": "tiny",
        "n_trials": 3,
        "num_epochs_range": IntRange(low=1, high=2),
        "pruner": "none",
        "confirm_top_k": 1,
        "confirm_seeds": 1,
        **settings,
    }
    return SearchConfig(**values)


def child_runs(client: MlflowClient, parent_id: str):
    experiment = client.get_experiment_by_name("search-test")
    query = f"tags.mlflow.parentRunId = '{parent_id}' and tags.{TRIAL_TAG} != ''"
    return client.search_runs([experiment.experiment_id], query)


@pytest.fixture(scope="module")
def tiny_study(mrpc_dir, tmp_path_factory, prefect_backend):
    """A finished 3-trial study on validation accuracy, its two best configurations confirmed
    over two seeds and the winner registered: (config, summary)."""
    folder = tmp_path_factory.mktemp("study")
    config = tiny_search(mrpc_dir, folder, "accuracy", confirm_top_k=2, confirm_seeds=2)
    state = search_flow(config, return_state=True)
    return config, {**state.result(), "flow_run_id": str(state.state_details.flow_run_id)}


def test_study_logs_nested_trials_and_registers_the_winner(tiny_study):
    config, summary = tiny_study
    client = MlflowClient(config.train.tracking_uri)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[STUDY_TAG] == "tiny"
    assert {"best_learning_rate", "best_num_epochs", "search_space"} <= set(parent.data.params)
    assert parent.data.metrics["finished_trials"] == 3
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    assert "plots/intermediate_values.png" in plots

    trials = child_runs(client, parent.info.run_id)
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in trials) == [0, 1, 2]
    assert all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.tags[STATE_TAG] == "COMPLETE" for r in trials)
    for run in trials:
        epochs = int(run.data.params["num_epochs"])
        history = client.get_metric_history(run.info.run_id, "eval_f1")
        assert [m.step for m in history] == list(range(1, epochs + 1))

    study = optuna.load_study(study_name="tiny", storage=config.storage)
    assert parent.data.params["best_learning_rate"] == str(study.best_params["learning_rate"])
    check_study_record(client, parent.info.run_id, study)
    assert summary["decision"].promoted
    assert champion_version(client, "tiny-model") == summary["decision"].challenger_version
    assert not list(config.train.output_dir.glob("**/checkpoint-*"))


def test_trial_values_are_the_best_epoch_in_their_runs(tiny_study):
    config, summary = tiny_study
    client = MlflowClient(config.train.tracking_uri)
    study = optuna.load_study(study_name="tiny", storage=config.storage)
    runs = {int(r.data.tags[TRIAL_TAG]): r for r in child_runs(client, summary["parent_run_id"])}
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        run_id = runs[trial.number].info.run_id
        history = client.get_metric_history(run_id, "eval_accuracy")  # the objective
        assert trial.value == max(m.value for m in history)
        per_epoch = lifecycle.reports_per_epoch(study)
        assert lifecycle.epoch_values(trial, per_epoch) == {m.step: m.value for m in history}


def test_search_trials_artifact_matches_optuna_and_mlflow(tiny_study):
    config, summary = tiny_study
    rows = prefect_artifact(summary["flow_run_id"], "search-trials")
    rows = json.loads(rows) if isinstance(rows, str) else rows
    study = optuna.load_study(study_name="tiny", storage=config.storage)
    client = MlflowClient(config.train.tracking_uri)
    runs = {
        r.data.tags[TRIAL_TAG]: r.info.run_id for r in child_runs(client, summary["parent_run_id"])
    }
    assert len(rows) == len(study.trials) == 3
    for row in rows:
        trial = study.trials[row["number"]]
        assert row["value"] == trial.value and row["state"] == trial.state.name
        assert row["param_learning_rate"] == trial.params["learning_rate"]
        assert row["epochs"] == trial.params["num_epochs"]  # every trial completed
        assert row["mlflow_run_id"] == runs[str(row["number"])]


def expected_winner(client, table: list[dict]) -> dict:
    """The confirmation's rule recomputed from the confirm runs' own records: the best mean
    leads; a configuration whose per-seed differences from it have a 95% t interval (scipy)
    that holds 0 is tied with it; the tied one with the fewest epochs, then the most frozen
    layers (as its run's params say), wins."""
    leader = max(table, key=lambda row: statistics.fmean(row["validation_scores"]))
    tied = [leader]
    for row in table:
        if row is leader:
            continue
        differences = np.subtract(row["validation_scores"], leader["validation_scores"])
        mean, sem = differences.mean(), scipy.stats.sem(differences)
        low, high = (mean, mean) if sem == 0 else scipy.stats.t.interval(
            0.95, len(differences) - 1, loc=mean, scale=sem
        )  # fmt: skip
        assert row["vs_leader"]["low"] == pytest.approx(low, abs=1e-12)
        assert row["vs_leader"]["high"] == pytest.approx(high, abs=1e-12)
        if low <= 0 <= high:
            tied.append(row)

    def cost(row: dict) -> tuple[int, int]:
        params = client.get_run(row["run_id"]).data.params
        return int(params["num_epochs"]), -int(params["frozen_layers"])

    return min(tied, key=cost)


def test_confirmation_and_winner_come_from_the_confirm_runs(tiny_study, tmp_path):
    config, summary = tiny_study
    client = MlflowClient(config.train.tracking_uri)
    path = client.download_artifacts(summary["parent_run_id"], "confirmation.json", str(tmp_path))
    table = json.loads(Path(path).read_text())
    assert len(table) == 2 and all(len(row["run_ids"]) == 2 for row in table)
    for row in table:
        logged = [client.get_run(r).data.metrics["validation_accuracy"] for r in row["run_ids"]]
        assert row["validation_scores"] == logged
        assert row["mean_validation"] == pytest.approx(statistics.fmean(logged))
        tags = [client.get_run(r).data.tags["finetrack.confirm_of_trial"] for r in row["run_ids"]]
        assert tags == [str(row["trial"])] * 2
    best = expected_winner(client, table)
    assert [row["trial"] for row in table if "reason" in row] == [best["trial"]]
    parent = client.get_run(summary["parent_run_id"]).data.metrics
    assert parent["confirmed_validation_accuracy"] == pytest.approx(best["mean_validation"])
    decision = summary["decision"]
    assert decision.metric == "accuracy"
    version = client.get_model_version("tiny-model", decision.challenger_version)
    assert version.run_id == best["run_ids"][0]


def test_mlflow_ui_shows_the_study(tiny_study, tmp_path):
    """What a user sees: the experiment, the study run with its trials nested, the champion."""
    config, summary = tiny_study
    client = MlflowClient(config.train.tracking_uri)
    experiment = client.get_experiment_by_name("search-test")
    trial = child_runs(client, summary["parent_run_id"])[0]
    version = summary["decision"].challenger_version
    with mlflow_server(config.train.tracking_uri) as url, browser_page() as page:
        page.goto(f"{url}/#/experiments/{experiment.experiment_id}/runs")
        page.get_by_text("study-tiny").first.wait_for(timeout=60_000)
        assistant = page.get_by_role("button", name="Close")  # MLflow's chat panel, if open
        if assistant.count():
            assistant.first.click()
        # the study run is listed with an expander; its trials are nested under it
        page.get_by_role("gridcell").filter(has_text="study-tiny").get_by_role("button").click()
        for number in range(3):
            page.get_by_text(f"trial-{number}", exact=True).wait_for(timeout=60_000)
        page.screenshot(path=tmp_path / "experiment.png")

        page.goto(f"{url}/#/experiments/{experiment.experiment_id}/runs/{trial.info.run_id}")
        page.get_by_text(trial.info.run_name).first.wait_for(timeout=60_000)
        page.get_by_text("study-tiny").first.wait_for(timeout=60_000)  # its parent run
        # the run's description says what the trial tried and how it ended
        page.get_by_text(f"Trial {trial.data.tags[TRIAL_TAG]}: learning_rate").first.wait_for(
            timeout=60_000
        )
        page.screenshot(path=tmp_path / "trial.png")

        parent = summary["parent_run_id"]
        page.goto(f"{url}/#/experiments/{experiment.experiment_id}/runs/{parent}")
        page.get_by_text("Confirmation over seeds").first.wait_for(timeout=60_000)
        page.screenshot(path=tmp_path / "study.png", full_page=True)

        page.goto(f"{url}/#/models/tiny-model")
        page.get_by_text(f"Version {version}").first.wait_for(timeout=60_000)
        page.get_by_text("champion").first.wait_for(timeout=60_000)
        page.screenshot(path=tmp_path / "model.png")

        page.goto(f"{url}/#/models/tiny-model/versions/{version}")
        page.get_by_text("became champion").first.wait_for(timeout=60_000)
        page.screenshot(path=tmp_path / "version.png")
    shots = ("experiment.png", "trial.png", "study.png", "model.png", "version.png")
    assert all((tmp_path / name).stat().st_size > 10_000 for name in shots)


def on_64_rows(config: SearchConfig) -> SearchConfig:
    """Two training steps per epoch at the default batch size: room for a report within it."""
    config.train = config.train.with_settings(max_train_samples=64)
    return config


@pytest.mark.parametrize(("per_epoch", "epochs", "losses"), [(2, 0.5, []), (1, 1, [1])])
def test_pruned_trial_stops_at_its_first_report(
    mrpc_dir, tmp_path, prefect_backend, monkeypatch, per_epoch, epochs, losses
):
    # F1 never exceeds 1, so this pruner prunes at the first report: half-way through epoch
    # 1 with two reports per epoch (the default), at its end with one
    monkeypatch.setattr(
        pruning, "make_pruner", lambda config: optuna.pruners.ThresholdPruner(upper=-1.0)
    )
    config = tiny_search(
        mrpc_dir, tmp_path, n_trials=1, num_epochs_range=IntRange(low=3, high=3),
        reports_per_epoch=per_epoch,
    )  # fmt: skip
    summary = search_flow(on_64_rows(config))

    study = optuna.load_study(study_name="tiny", storage=config.storage)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    client = MlflowClient(config.train.tracking_uri)
    (run,) = child_runs(client, summary["parent_run_id"])
    assert run.data.tags[STATE_TAG] == "PRUNED"
    assert run.data.metrics["epochs_trained"] == epochs
    assert f"pruned after {epochs:g} epoch(s)" in run.data.tags["mlflow.note.content"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == losses
    assert summary["winner"] is None
    check_study_record(client, summary["parent_run_id"], study)


def test_a_trial_is_not_pruned_at_its_last_report(mrpc_dir, tmp_path, prefect_backend, monkeypatch):
    # this pruner would prune at every report; the last one has no training left to save
    monkeypatch.setattr(
        pruning, "make_pruner", lambda config: optuna.pruners.ThresholdPruner(upper=-1.0)
    )
    config = tiny_search(
        mrpc_dir, tmp_path, n_trials=1, num_epochs_range=IntRange(low=1, high=1),
        reports_per_epoch=1, confirm_top_k=0,
    )  # fmt: skip
    summary = search_flow(config)

    (trial,) = optuna.load_study(study_name="tiny", storage=config.storage).trials
    assert trial.state == TrialState.COMPLETE
    client = MlflowClient(config.train.tracking_uri)
    (run,) = child_runs(client, summary["parent_run_id"])
    assert [trial.value] == [m.value for m in client.get_metric_history(run.info.run_id, "eval_f1")]


def test_reports_within_epochs_leave_the_epoch_record_alone(
    mrpc_dir, tmp_path, prefect_backend, monkeypatch
):
    # study "tiny": a pruner that listens to every report and never prunes; "plain": none
    def pruner(config):
        if config.study_name == "tiny":
            return optuna.pruners.ThresholdPruner(lower=-1.0)
        return optuna.pruners.NopPruner()

    monkeypatch.setattr(pruning, "make_pruner", pruner)
    config = tiny_search(
        mrpc_dir, tmp_path, n_trials=1, num_epochs_range=IntRange(low=2, high=2), confirm_top_k=0
    )
    summary = search_flow(on_64_rows(config))
    plain = config.model_copy(update={"study_name": "plain"})
    search_flow(plain)

    (trial,) = optuna.load_study(study_name="tiny", storage=config.storage).trials
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4]  # two reports in each epoch
    assert all(0 <= value <= 1 for value in trial.intermediate_values.values())
    client = MlflowClient(config.train.tracking_uri)
    (run,) = child_runs(client, summary["parent_run_id"])
    history = client.get_metric_history(run.info.run_id, "eval_f1")
    assert [m.step for m in history] == [1, 2]  # the epochs' own evaluations only
    assert {2 * m.step: m.value for m in history} == {
        step: trial.intermediate_values[step] for step in (2, 4)
    }
    assert trial.value == max(m.value for m in history)
    assert run.data.metrics["epochs_trained"] == 2
    assert not [key for key in run.data.metrics if key.startswith("probe")]
    # the same configuration without reports within epochs trains the same model
    (alone,) = optuna.load_study(study_name="plain", storage=config.storage).trials
    assert alone.params == trial.params and sorted(alone.intermediate_values) == [2, 4]
    assert lifecycle.epoch_values(alone, 2) == lifecycle.epoch_values(trial, 2)


def epoch_checkpoint_of_running_trial(storage: str, tmp_path) -> bool:
    """A trial runs, its first epoch is in MLflow and its epoch-1 checkpoint is on disk."""
    running = trials_in(storage, (TrialState.RUNNING,))
    runs = trial_runs(tmp_path, running[0].number) if running else []
    if not runs:
        return False
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    logged = client.get_metric_history(runs[0].info.run_id, "eval_f1")
    folder = tmp_path / "outputs" / f"shared-trial-{running[0].number}"
    return bool(logged) and any(folder.glob("checkpoint-*/trainer_state.json"))


def test_killed_trial_resumes_from_its_epoch_checkpoint(mrpc_dir, tmp_path):
    """SIGKILL in epoch 2 of a trial: the rerun finds it stale, runs it again from the epoch-1
    checkpoint in the same MLflow run (every epoch once), and keeps the finished trials."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    command = search_command(
        mrpc_dir, tmp_path, "--n-trials", "3", "--finalize", "false", "--num-epochs-range", "2,2"
    )
    worker = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for(
            lambda: (
                trials_in(storage, (TrialState.COMPLETE,))
                and epoch_checkpoint_of_running_trial(storage, tmp_path)
            ),
            300,
            "a completed trial and a running one past its first epoch",
        )
    finally:  # the whole process group: the worker and its temporary Prefect server
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    before = {t.number: t.datetime_start for t in trials_in(storage, (TrialState.COMPLETE,))}
    (killed,) = trials_in(storage, (TrialState.RUNNING,))
    # where the killed trial stood: its last whole checkpoint on disk, its epochs in MLflow
    folder = tmp_path / "outputs" / f"shared-trial-{killed.number}"
    states = folder.glob("checkpoint-*/trainer_state.json")
    saved_epoch = max(round(json.loads(path.read_text())["epoch"]) for path in states)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    killed_history = client.get_metric_history(killed.user_attrs["mlflow_run_id"], "eval_f1")
    assert max(m.step for m in killed_history) == saved_epoch
    time.sleep(4)  # past the grace period: the dead worker's heartbeat is stale

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    study = optuna.load_study(study_name="shared", storage=storage)
    after = {t.number: t for t in study.trials}
    assert all(after[n].datetime_start == start for n, start in before.items())
    assert after[killed.number].state == TrialState.FAIL
    (retry,) = [t for t in study.trials if t.user_attrs.get(TrialNote.RETRY_OF) == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs[TrialNote.RESUMED_FROM] == 1
    per_epoch = lifecycle.reports_per_epoch(study)
    first_epoch = {s: v for s, v in killed.intermediate_values.items() if s <= per_epoch}
    assert first_epoch and all(  # not trained again: reported as the lost attempt had
        retry.intermediate_values[step] == value for step, value in first_epoch.items()
    )
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3
    experiment = client.get_experiment_by_name("search-test")
    runs = client.search_runs([experiment.experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(runs) == 3 + 1  # one run per trial configuration and the study run
    (resumed_run,) = trial_runs(tmp_path, retry.number)
    assert resumed_run.info.run_id == killed.user_attrs["mlflow_run_id"]
    assert resumed_run.info.status == "FINISHED"
    assert resumed_run.data.tags["finetrack.trial_state"] == "COMPLETE"
    assert resumed_run.data.metrics["resumed_from_epoch"] == saved_epoch
    history = client.get_metric_history(resumed_run.info.run_id, "eval_f1")
    assert [m.step for m in history] == [1, 2]
    epoch_two = lifecycle.epoch_values(retry, per_epoch)[2]
    assert history[1].value == pytest.approx(epoch_two, abs=1e-9)
    assert not list((tmp_path / "outputs").glob("shared-trial-*"))  # checkpoints removed
    # the study run's record counts the failed attempt, its retry and the finished trials
    (study_run,) = [r for r in runs if r.data.tags.get("finetrack.flow") == "search"]
    check_study_record(client, study_run.info.run_id, study)


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_storage(request, tmp_path) -> str:
    """The study storage two workers share: the default SQLite file, or a PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/optuna.db"
    return request.getfixturevalue("postgres_url")


def test_two_workers_share_one_study(mrpc_dir, tmp_path, shared_storage):
    command = search_command(
        mrpc_dir, tmp_path, "--n-trials", "4", "--finalize", "false", "--storage", shared_storage
    )
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [subprocess.Popen(command, env=env, stderr=log.open("w")) for log in logs]
    for worker, log in zip(workers, logs, strict=True):
        worker.wait(timeout=900)
        err = log.read_text()
        assert worker.returncode == 0, err[-2000:]
        assert "database is locked" not in err
    study = optuna.load_study(study_name="shared", storage=shared_storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 4
