"""The whole fine-tune flow on a small slice of real MRPC, checked through MLflow."""

import logging
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.fine_tune import fine_tune
from tasks.config import FineTuneConfig
from tasks.data import DataError
from tests.support.data import small_train_config

pytestmark = pytest.mark.usefixtures("prefect_backend")  # every test runs flows


def small_config(mrpc_dir: Path, tmp_path: Path, **settings) -> FineTuneConfig:
    return small_train_config(mrpc_dir, tmp_path, num_epochs=2, experiment_name="e2e", **settings)


@pytest.mark.slow
def test_flow_records_a_complete_run(mrpc_dir, tmp_path, caplog):
    config = small_config(mrpc_dir, tmp_path, registered_model_name="e2e-model")
    with caplog.at_level(logging.WARNING, logger="flows.fine_tune"):
        summary = fine_tune(config)
    # 64 train rows: the run says at its start what to change
    (advice,) = [r.getMessage() for r in caplog.records if "train split has" in r.getMessage()]
    assert "64 rows (2 step(s) an epoch at batch 32)" in advice
    assert "raise --num-epochs or lower --batch-size" in advice

    client = MlflowClient(config.tracking_uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    # the default run name, as the README shows it: data folder, learning rate, epochs
    assert run.info.run_name == f"fine-tune-{mrpc_dir.name}-lr0.0001-ep2"
    params = run.data.params
    assert params["learning_rate"] == "0.0001"
    assert params["batch_size"] == "32"
    assert params["data_fingerprint"] == summary.data_fingerprint
    assert "transformers_version" in params and "torch_version" in params

    for name in ("train_loss", "eval_loss", "eval_accuracy", "eval_f1"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == [1, 2], name
    for name in ("validation_accuracy", "validation_f1", "test_accuracy", "test_f1"):
        assert 0.0 <= run.data.metrics[name] <= 1.0

    contexts = {tag.value for item in run.inputs.dataset_inputs for tag in item.tags}
    assert contexts == {"training", "validation", "testing"}
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {summary.data_fingerprint[:16]}

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "config.json",
        "predictions_validation.csv",
        "predictions_test.csv",
        "confusion_matrix_validation.png",
    } <= artifacts
    predictions = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="predictions_test.csv", dst_path=str(tmp_path)
        )
    )
    assert len(predictions) == 40 and {"predicted", "prob_1"} <= set(predictions.columns)

    model = mlflow.pyfunc.load_model(summary.model_uri)
    batch = pd.DataFrame(
        [{"text": "The cat sat on the mat .", "text_pair": "A cat was sitting on the mat ."}]
    )
    output = model.predict(batch)
    assert list(output["label"]) and output["label"][0] in {"0", "1"}
    assert 0.0 <= float(output["score"][0]) <= 1.0

    versions = client.search_model_versions("name='e2e-model'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    # the first registered version has no champion to beat
    assert summary.decision.promoted is True
    assert client.get_model_version_by_alias("e2e-model", "champion").run_id == run.info.run_id
    assert run.data.tags["finetrack.promotion.promoted"] == "True"
    assert not any((tmp_path / "outputs").glob("*/checkpoint-*"))


@pytest.mark.slow
def test_bad_data_stops_before_any_run(tmp_path):
    config = small_config(tmp_path / "missing", tmp_path)
    with pytest.raises(DataError, match="data folder not found"):
        fine_tune(config)
    client = MlflowClient(config.tracking_uri)
    assert client.search_runs(experiment_ids=["0"]) == []
    assert client.get_experiment_by_name("e2e") is None
