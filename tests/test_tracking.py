"""MLflow runs always end in a final state, and secrets never reach the logs."""

import pytest
from mlflow.tracking import MlflowClient

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


def test_epoch_metrics_are_the_trainers_log_history(client, mrpc_dir, tmp_path):
    """Every per-epoch value in MLflow equals the Trainer's own log history for that epoch."""
    from tasks.config import FineTuneConfig
    from tasks.data import load_data
    from tasks.model import resolve_model
    from tasks.tokenization import load_tokenizer, tokenize
    from tasks.tracking import EpochMetricsLogger
    from tasks.train import train

    config = FineTuneConfig(
        data_dir=mrpc_dir, max_train_samples=32, max_eval_samples=20, eval_batch_size=16,
        num_epochs=2, output_dir=tmp_path / "out",
    )  # fmt: skip
    data = load_data(config)
    model_path = resolve_model(config.model_name_or_path)
    tokenizer = load_tokenizer(model_path)
    tokenized = tokenize(data, tokenizer, config.max_length, tmp_path / "cache").datasets
    with tracked_run(client, "epochs") as run_id:
        result = train(
            config, model_path, tokenizer, tokenized, data.label_names, tmp_path / "out",
            callbacks=[EpochMetricsLogger(client, run_id)],
        )  # fmt: skip
    expected: dict[str, dict[int, float]] = {}
    for row in result.history:
        epoch = round(row["epoch"])
        for key, name in (("loss", "train_loss"), ("eval_loss", "eval_loss"),
                          ("eval_accuracy", "eval_accuracy"), ("eval_f1", "eval_f1")):  # fmt: skip
            if key in row:
                expected.setdefault(name, {})[epoch] = row[key]
    assert set(expected) == {"train_loss", "eval_loss", "eval_accuracy", "eval_f1"}
    for name, values in expected.items():
        logged = {m.step: m.value for m in client.get_metric_history(run_id, name)}
        assert logged == pytest.approx(values, abs=1e-6), name
        assert sorted(logged) == [1, 2]
