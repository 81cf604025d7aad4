"""Retrain promotes only a better model; predict uses the champion and refuses bad input."""

import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from oracles import prefect_artifact, pyfunc_predictions, raw_split, scores
from scipy.stats import binomtest

from flows.predict import predict
from flows.retrain import retrain
from tasks.config import PredictConfig, RetrainConfig
from tasks.data import DataError
from tasks.prediction import NoModelError
from tasks.registry import champion_version
from tests.support.data import small_train_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_backend")]


def test_retrain_twice_then_predict(mrpc_dir, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    train = small_train_config(
        mrpc_dir,
        tmp_path,
        max_train_samples=48,
        max_eval_samples=20,  # two evaluation batches of 16 and 4
        num_epochs=1,
        experiment_name="retrain-test",
    )
    config = RetrainConfig(
        train=train, registered_model_name="rt", storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    first = retrain(config)
    assert first["params"] == {}  # no study yet: the config's hyperparameters
    assert first["decision"].promoted and first["decision"].champion_version is None

    # Same data, settings and seed give the same model: not better, so no promotion.
    state = retrain(config, return_state=True)
    second = state.result()
    assert not second["decision"].promoted
    assert second["decision"].challenger_score == pytest.approx(first["decision"].challenger_score)
    client = MlflowClient(tracking_uri)
    assert champion_version(client, "rt") == first["decision"].challenger_version
    tags = client.get_run(second["run_id"]).data.tags
    assert tags["finetrack.promotion.promoted"] == "False"
    assert tags["finetrack.promotion.champion_version"] == first["decision"].challenger_version

    # the recorded promotion scores are a rescoring of both versions by the logged models
    raw = raw_split(mrpc_dir, "validation", 20)
    served = {  # each version loaded and scored once, for the scores and the evidence below
        version: pyfunc_predictions(f"models:/rt/{version}", raw, {"precision": "fp32"})
        for version in ("1", "2")
    }
    for key, version in (("challenger", "2"), ("champion", "1")):
        expected = scores(raw["label"], served[version]["label"])["f1"]  # the config's objective
        recorded = client.get_run(second["run_id"]).data.metrics[f"promotion_{key}_score"]
        assert recorded == pytest.approx(expected, abs=1e-12), key

    decision = prefect_artifact(str(state.state_details.flow_run_id), "retrain-decision")
    metrics = client.get_run(second["run_id"]).data.metrics
    assert "kept the champion" in decision
    challenger = re.search(r"challenger v2: f1=([0-9.]+)", decision).group(1)
    champion = re.search(r"champion before: v1 f1=([0-9.]+)", decision).group(1)
    assert float(challenger) == pytest.approx(metrics["promotion_challenger_score"], abs=5e-5)
    assert float(champion) == pytest.approx(metrics["promotion_champion_score"], abs=5e-5)
    # the decision's evidence, recounted from the two logged models' labels with scipy
    truth = raw["label"].to_numpy()
    right = {version: served[version]["label"].to_numpy() == truth for version in ("1", "2")}
    only_new, only_old = (
        int((right["2"] & ~right["1"]).sum()),
        int((right["1"] & ~right["2"]).sum()),
    )
    discordant = only_new + only_old
    assert metrics["promotion_disagreements"] == discordant
    assert metrics["promotion_rows"] == len(truth)
    expected_p = binomtest(only_new, discordant).pvalue if discordant else 1.0
    assert metrics["promotion_mcnemar_p"] == pytest.approx(expected_p)
    difference = metrics["promotion_challenger_score"] - metrics["promotion_champion_score"]
    assert metrics["promotion_difference"] == pytest.approx(difference, abs=1e-12)
    assert metrics["promotion_ci_low"] <= difference <= metrics["promotion_ci_high"]
    assert f"- difference: {100 * difference:+.2f} points, 95% CI" in decision
    assert "- decision: not promoted:" in decision
    assert tags["finetrack.promotion.reason"].startswith("not promoted:")

    # more rows than one prediction batch, in batches that do not divide them (64+64+22)
    rows = pd.read_csv(mrpc_dir / "test.tsv", sep="\t", quoting=3).head(150)
    source = tmp_path / "to_classify.tsv"
    rows.drop(columns=["label"]).to_csv(source, sep="\t", index=False, quoting=3)
    result = predict(
        PredictConfig(input_path=source, registered_model_name="rt", tracking_uri=tracking_uri)
    )
    output = pd.read_csv(result["output_path"], sep=",", dtype={"predicted_label": str})
    assert result["model_uri"].endswith("/1")
    assert output["sentence1"].tolist() == rows["sentence1"].tolist()
    whole = mlflow.pyfunc.load_model("models:/rt/1").predict(
        pd.DataFrame({"text": rows["sentence1"], "text_pair": rows["sentence2"]})
    )
    assert output["predicted_label"].tolist() == whole["label"].astype(str).tolist()
    np.testing.assert_allclose(output["probability"], whole["score"], atol=1e-6)
    job = client.get_run(result["run_id"]).data
    assert job.params["rows"] == "150"
    recount = output["predicted_label"].value_counts().to_dict()
    assert {k: v for k, v in job.metrics.items() if k.startswith("predicted_")} == {
        f"predicted_{label}": count for label, count in recount.items()
    }

    with pytest.raises(DataError, match="missing column"):
        predict(
            PredictConfig(
                input_path=source,
                text_column="text",
                registered_model_name="rt",
                tracking_uri=tracking_uri,
            )
        )
    with pytest.raises(NoModelError, match="has no 'champion' alias"):
        predict(
            PredictConfig(
                input_path=source, registered_model_name="unknown", tracking_uri=tracking_uri
            )
        )
