"""MLflow runs always end in a final state, and secrets never reach the logs."""

import pytest
from mlflow.tracking import MlflowClient
from transformers import TrainerCallback

from tasks.tracking import TrackingError, connect, experiment_id, redact, tracked_run


@pytest.fixture
def client(tmp_path) -> MlflowClient:
    return connect(f"sqlite:///{tmp_path}/mlflow.db")


def status_of(client, run_id):
    return client.get_run(run_id).info.status


def test_finished_failed_killed(client, tmp_path):
    with tracked_run(client, "t") as ok:
        pass
    assert status_of(client, ok) == "FINISHED"
    run_ids = []
    with pytest.raises(RuntimeError), tracked_run(client, "t") as failed:
        run_ids.append(failed)
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), tracked_run(client, "t") as killed:
        run_ids.append(killed)
        raise KeyboardInterrupt
    assert [status_of(client, r) for r in run_ids] == ["FAILED", "KILLED"]
    experiment = client.get_experiment_by_name("t")
    assert experiment.artifact_location.startswith((tmp_path / "mlruns").as_uri())


def test_redact_hides_passwords():
    uri = "postgresql://optuna:s3cret@db.local:5432/studies"
    assert redact(uri) == "postgresql://optuna:***@db.local:5432/studies"
    assert redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_unreachable_server_fails_fast():
    with pytest.raises(TrackingError, match="unreachable"):
        connect("http://127.0.0.1:9", timeout=2)


def test_experiment_created_by_another_worker_in_between(client, monkeypatch):
    """Two workers both see no experiment, both create it: the second must use the first's."""
    existing = client.create_experiment("shared")
    real_lookup = client.get_experiment_by_name
    calls = []

    def lookup(name):  # the first look-up happened before the other worker's create
        calls.append(name)
        return None if len(calls) == 1 else real_lookup(name)

    monkeypatch.setattr(client, "get_experiment_by_name", lookup)
    assert experiment_id(client, "shared") == existing


class Trainee:
    """A tiny fine-tune (32 MRPC rows) whose epochs an `EpochMetricsLogger` sends to MLflow."""

    def __init__(self, mrpc_dir, folder, num_epochs: int):
        from tasks.config import FineTuneConfig
        from tasks.data import load_data
        from tasks.model import resolve_model
        from tasks.tokenization import load_tokenizer, tokenize

        self.config = FineTuneConfig(
            data_dir=mrpc_dir, max_train_samples=32, max_eval_samples=20, eval_batch_size=16,
            num_epochs=num_epochs, output_dir=folder / "out",
        )  # fmt: skip
        data = load_data(self.config)
        self.model_path = resolve_model(self.config.model_name_or_path)
        self.tokenizer = load_tokenizer(self.model_path)
        cache = folder / "cache"
        self.tokenized = tokenize(data, self.tokenizer, self.config.max_length, cache).datasets
        self.label_names = data.label_names

    def train(self, client, run_id, before=(), resume_from_checkpoint=None):
        from tasks.tracking import EpochMetricsLogger
        from tasks.train import train

        return train(
            self.config, self.model_path, self.tokenizer, self.tokenized, self.label_names,
            self.config.output_dir, callbacks=[*before, EpochMetricsLogger(client, run_id)],
            resumable=True, resume_from_checkpoint=resume_from_checkpoint,
        )  # fmt: skip


def assert_epochs_logged_once(client, run_id, history: list[dict], epochs: list[int]) -> None:
    """MLflow holds each epoch of the Trainer's log history once, with its values."""
    expected: dict[str, dict[int, float]] = {}
    for row in history:
        epoch = round(row["epoch"])
        for key, name in (("loss", "train_loss"), ("eval_loss", "eval_loss"),
                          ("eval_accuracy", "eval_accuracy"), ("eval_f1", "eval_f1")):  # fmt: skip
            if key in row:
                expected.setdefault(name, {})[epoch] = row[key]
    assert set(expected) == {"train_loss", "eval_loss", "eval_accuracy", "eval_f1"}
    for name, values in expected.items():
        points = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in points) == epochs, name  # no epoch twice, none missing
        assert {m.step: m.value for m in points} == pytest.approx(values, abs=1e-6), name


def test_epoch_metrics_are_the_trainers_log_history(client, mrpc_dir, tmp_path):
    """Every per-epoch value in MLflow equals the Trainer's own log history for that epoch."""
    with tracked_run(client, "epochs") as run_id:
        result = Trainee(mrpc_dir, tmp_path, num_epochs=2).train(client, run_id)
    assert_epochs_logged_once(client, run_id, result.history, [1, 2])


class Lost(Exception):
    """The worker dies here."""


class DieAt(TrainerCallback):
    def __init__(self, event: str, epoch: int):
        self.event, self.epoch = event, epoch

    def on_evaluate(self, args, state, control, **kwargs):
        if self.event == "evaluate" and round(state.epoch) == self.epoch:
            raise Lost

    def on_save(self, args, state, control, **kwargs):
        if self.event == "save" and round(state.epoch) == self.epoch:
            raise Lost


@pytest.mark.parametrize(
    ("event", "checkpointed"),
    [("evaluate", 1), ("save", 2)],  # before epoch 2's checkpoint; after it, before logging
)
def test_a_worker_lost_around_a_checkpoint_leaves_each_epoch_logged_once(
    client, mrpc_dir, tmp_path, event, checkpointed
):
    from tasks.trial_lifecycle import last_complete_checkpoint

    trainee = Trainee(mrpc_dir, tmp_path, num_epochs=3)
    with pytest.raises(Lost), tracked_run(client, "epochs") as run_id:
        trainee.train(client, run_id, before=[DieAt(event, epoch=2)])
    assert [m.step for m in client.get_metric_history(run_id, "eval_f1")] == [1]
    checkpoint, epoch = last_complete_checkpoint(trainee.config.output_dir)
    assert epoch == checkpointed
    with tracked_run(client, "epochs", resume_run_id=run_id):
        result = trainee.train(client, run_id, resume_from_checkpoint=checkpoint)
    assert_epochs_logged_once(client, run_id, result.history, [1, 2, 3])
