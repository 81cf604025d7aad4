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
