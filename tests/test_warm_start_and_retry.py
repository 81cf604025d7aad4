"""Known configurations are queued first (warm start); a lost trial is queued again, a
bounded number of times, with what it needs to resume."""

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tasks import search, search_space, tracking, warm_start
from tasks import trial_lifecycle as lifecycle
from tasks.config import FineTuneConfig, SearchConfig
from tasks.trial_lifecycle import TrialNote


def config(tmp_path, **settings) -> SearchConfig:
    train = FineTuneConfig(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        registered_model_name="wm",
        output_dir=tmp_path / "outputs",
    )
    return SearchConfig(train=train, storage=f"sqlite:///{tmp_path}/optuna.db", **settings)


def finished_study(tmp_path, name: str, values: dict[float, float]) -> None:
    """An earlier study whose trials (learning rate -> value) are complete."""
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize"
    )
    distributions = {
        "learning_rate": FloatDistribution(1e-5, 1e-4, log=True),
        "num_epochs": IntDistribution(1, 5),
    }
    for lr, value in values.items():
        params = {"learning_rate": lr, "num_epochs": 2}
        study.add_trial(create_trial(params=params, distributions=distributions, value=value))


def champion(tmp_path, params: dict[str, str]) -> None:
    """A registered champion whose run logged `params` (as a fine-tune run does)."""
    client = tracking.connect(f"sqlite:///{tmp_path}/mlflow.db")
    with tracking.tracked_run(client, "wm") as run_id:
        tracking.log_params(client, run_id, params)
    client.create_registered_model("wm")
    version = client.create_model_version("wm", f"runs:/{run_id}/model", run_id)
    client.set_registered_model_alias("wm", "champion", version.version)


def test_champion_and_best_earlier_trials_are_queued_first(tmp_path):
    finished_study(tmp_path, "earlier", {2e-5: 0.80, 3e-5: 0.85, 4e-5: 0.82})
    champion(tmp_path, {"learning_rate": "5e-05", "num_epochs": "3", "batch_size": "8"})
    settings = config(
        tmp_path, study_name="new", warm_start_champion=True, warm_start_study="earlier"
    )
    study = search.open_study(settings, None)
    client = MlflowClient(settings.train.tracking_uri)
    queued = warm_start.enqueue_known_configurations(settings, study, client)

    assert [q["params"] for q in queued] == [
        {"learning_rate": 5e-5, "num_epochs": 3},
        {"learning_rate": 3e-5, "num_epochs": 2},
        {"learning_rate": 4e-5, "num_epochs": 2},
    ]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [q["params"] for q in queued]
    assert waiting[0].user_attrs[TrialNote.WARM_START] == "champion of wm"
    # the first trials run exactly these configurations
    drawn = []
    study.optimize(lambda t: drawn.append(search_space.suggest(t, settings)) or 0.5, n_trials=3)
    assert drawn == [q["params"] for q in queued]
    # resumed, the study queues nothing again
    assert warm_start.enqueue_known_configurations(settings, study, client) == []


def test_configurations_outside_the_space_are_skipped(tmp_path):
    champion(tmp_path, {"learning_rate": "0.5", "num_epochs": "3"})
    settings = config(tmp_path, study_name="new", warm_start_champion=True)
    study = search.open_study(settings, None)
    client = MlflowClient(settings.train.tracking_uri)
    assert warm_start.enqueue_known_configurations(settings, study, client) == []
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_no_champion_and_no_earlier_study_queue_nothing(tmp_path):
    settings = config(tmp_path, study_name="new", warm_start_champion=True, warm_start_study="x")
    study = search.open_study(settings, None)
    client = tracking.connect(settings.train.tracking_uri)
    assert warm_start.enqueue_known_configurations(settings, study, client) == []


def lose(study: optuna.Study, settings: SearchConfig) -> optuna.Trial:
    """Start a trial (the next queued one, if any) and leave it RUNNING, as a dead worker."""
    trial = study.ask()
    search_space.suggest(trial, settings)
    trial.report(0.7, 1)
    return trial


def test_a_lost_trial_is_retried_a_bounded_number_of_times(tmp_path):
    settings = config(tmp_path, study_name="lost", trial_retries=2)
    study = search.open_study(settings, None)
    first = lose(study, settings)
    study.tell(first, state=TrialState.FAIL)
    assert lifecycle.enqueue_retry(study, first, settings.trial_retries)

    second = lose(study, settings)  # the queued retry, lost again
    assert second.params == first.params
    assert second.user_attrs[TrialNote.RETRY_OF] == first.number
    assert lifecycle.origin(second) == first.number
    assert lifecycle.checkpoints_dir(settings, second) == lifecycle.checkpoints_dir(settings, first)
    study.tell(second, state=TrialState.FAIL)
    assert lifecycle.enqueue_retry(study, second, settings.trial_retries)

    third = lose(study, settings)
    assert third.user_attrs[TrialNote.RETRY_OF] == second.number
    assert lifecycle.origin(third) == first.number
    study.tell(third, state=TrialState.FAIL)
    assert not lifecycle.enqueue_retry(study, third, settings.trial_retries)  # two retries done
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_resume_point_of_a_retry(tmp_path):
    settings = config(tmp_path, study_name="resume")
    study = search.open_study(settings, None)
    lost = lose(study, settings)
    lost.set_user_attr("mlflow_run_id", "abc")
    for step, value in ((2, 0.75), (3, 0.78), (4, 0.8)):  # two reports per epoch (default)
        lost.report(value, step)
    study.tell(lost, state=TrialState.FAIL)
    lifecycle.enqueue_retry(study, lost, 1)
    retry = study.ask()
    folder = lifecycle.checkpoints_dir(settings, retry)
    assert lifecycle.resume_point(study, lost, folder) is None  # a first attempt
    nothing_saved = lifecycle.resume_point(study, retry, folder)
    assert (nothing_saved.run_id, nothing_saved.checkpoint, nothing_saved.epoch) == ("abc", None, 0)
    assert nothing_saved.reported == {}

    checkpoint = folder / "checkpoint-12"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"epoch": 1.0}')
    point = lifecycle.resume_point(study, retry, folder)
    assert point.checkpoint == str(checkpoint) and point.epoch == 1
    # epoch 1 = reports 1 and 2; epoch 2 was not saved: trained again
    assert point.reported == {1: pytest.approx(0.7), 2: pytest.approx(0.75)}
    (folder / "checkpoint-24").mkdir()  # lost while saving: no trainer state yet
    assert lifecycle.resume_point(study, retry, folder).checkpoint == str(checkpoint)


def test_a_trial_queued_twice_is_retried_once_and_keeps_its_run(tmp_path):
    """Stopped (SIGTERM queues a retry) and then found stale (the heartbeat check queues
    one): one retry, which carries the first attempt's MLflow run."""
    settings = config(tmp_path, study_name="twice")
    study = search.open_study(settings, None)
    lost = lose(study, settings)
    lost.set_user_attr(TrialNote.MLFLOW_RUN, "run-of-the-first-attempt")
    assert lifecycle.enqueue_retry(study, lost, 2)
    study.tell(lost, state=TrialState.FAIL)
    assert lifecycle.enqueue_retry(study, study.trials[lost.number], 2)
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs[TrialNote.CHAIN_RUN] == "run-of-the-first-attempt"
    assert lifecycle.retried(study, lost)

    # the queued retry counts as claimed for a new trial's surplus check, not for stopping
    assert lifecycle.claimed_before(study, 99, queued=True) == 1
    assert lifecycle.claimed_before(study, 99) == 0

    # a retry lost before it recorded a run of its own still leads to the first attempt's
    again = lose(study, settings)
    study.tell(again, state=TrialState.FAIL)
    lifecycle.enqueue_retry(study, again, 2)
    third = study.ask()
    folder = lifecycle.checkpoints_dir(settings, third)
    assert lifecycle.resume_point(study, third, folder).run_id == "run-of-the-first-attempt"


def test_epochs_of_a_retry_count_what_it_trained():
    resumed = create_trial(
        params={}, distributions={}, value=0.8,
        intermediate_values={1: 0.7, 2: 0.8}, user_attrs={TrialNote.RESUMED_FROM: 1},
    )  # fmt: skip
    fresh = create_trial(params={}, distributions={}, value=0.8, intermediate_values={1: 0.7})
    assert lifecycle.epochs_trained(resumed, 1) == 1
    assert lifecycle.epochs_trained(fresh, 1) == 1
    # two reports per epoch: pruned at its third report, half-way through epoch 2
    halves = create_trial(
        params={}, distributions={}, state=TrialState.PRUNED,
        intermediate_values={1: 0.6, 2: 0.7, 3: 0.65},
    )  # fmt: skip
    assert lifecycle.epochs_trained(halves, 2) == 1.5
    assert lifecycle.epoch_values(halves, 2) == {1: 0.7}
    resumed_halves = create_trial(
        params={}, distributions={}, value=0.8,
        intermediate_values={1: 0.6, 2: 0.7, 3: 0.75, 4: 0.8},
        user_attrs={TrialNote.RESUMED_FROM: 1},
    )  # fmt: skip
    assert lifecycle.epochs_trained(resumed_halves, 2) == 1
    assert lifecycle.epoch_values(resumed_halves, 2) == {1: 0.7, 2: 0.8}


def test_phases_of_a_lost_and_retried_trial_follow_the_transitions(tmp_path):
    """Queued, running, lost, retried, resumed and ended: each phase a trial passes through is
    one the lifecycle allows after the one before."""
    settings = config(tmp_path, study_name="phases", trial_retries=1)
    study = search.open_study(settings, None)
    seen: dict[int, list[lifecycle.Phase]] = {}

    def look() -> None:
        for trial in study.get_trials(deepcopy=False):
            phases = seen.setdefault(trial.number, [])
            now = lifecycle.phase(study, trial)
            if not phases or phases[-1] is not now:
                assert not phases or now in lifecycle.TRANSITIONS[phases[-1]], (phases, now)
                phases.append(now)

    first = lose(study, settings)
    lifecycle.started(first, "run-0", None)
    look()
    study.tell(first, state=TrialState.FAIL)  # found silent: failed as stale, noted lost
    lifecycle.note_lost(study, study.trials[first.number])
    look()
    assert lifecycle.enqueue_retry(study, study.trials[first.number], settings.trial_retries)
    look()
    retry = lose(study, settings)
    lifecycle.resumed(retry, 1)
    look()
    study.tell(retry, 0.8)
    look()
    assert seen == {
        0: [lifecycle.Phase.RUNNING, lifecycle.Phase.LOST, lifecycle.Phase.RETRIED],
        1: [lifecycle.Phase.QUEUED, lifecycle.Phase.RESUMED, lifecycle.Phase.COMPLETE],
    }
    assert lifecycle.lost_flow_runs(study) == {""}  # no flow run: trials run in-process here
    second_loss = lose(study, settings)
    study.tell(second_loss, state=TrialState.FAIL)
    assert lifecycle.phase(study, study.trials[second_loss.number]) is lifecycle.Phase.FAILED
    assert lifecycle.ended(pruned=True) is lifecycle.Phase.PRUNED
    assert str(lifecycle.Phase.FAILED) == "FAIL"  # the MLflow tag value of a failed trial


def test_one_wait_loop_fails_stale_trials_before_each_step(tmp_path, monkeypatch):
    settings = config(tmp_path, study_name="waits")
    study = search.open_study(settings, None)
    calls: list[str] = []
    monkeypatch.setattr(
        optuna.storages, "fail_stale_trials", lambda study: calls.append("stale check")
    )
    monkeypatch.setattr(lifecycle.time, "sleep", lambda seconds: calls.append(f"sleep {seconds}"))
    answers = iter([lifecycle.Next.LATER, lifecycle.Next.AGAIN, lifecycle.Next.DONE])

    def step() -> lifecycle.Next:
        calls.append("step")
        return next(answers)

    lifecycle.wait_for(study, step, poll_seconds=7)
    assert calls == ["stale check", "step", "sleep 7", "stale check", "step", "stale check", "step"]
