"""The operator's path, with real components: a Prefect server, the deployments from
deployment.yaml, a process worker, `prefect deployment run`, MLflow checked afterwards.

The champion only moves for a better model: the first model is trained on MRPC rows with
their labels flipped (it learns to say "not a paraphrase", F1 near 0 on true validation
rows), a retrain on the true labels beats it, a second retrain on flipped labels does not.
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.registry import champion_version
from tests.support.cluster import Worker, stop_all
from tests.support.data import ROOT

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).parent / "prefect")
SLICE = {
    "max_train_samples": 48,
    "max_eval_samples": 20,
    "eval_batch_size": 16,  # two evaluation batches of 16 and 4
    "num_epochs": 2,
    "learning_rate": 1e-4,
}


def prefect(env: dict, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"prefect {args}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


def run_deployment(env: dict, name: str, config: dict) -> str:
    """`prefect deployment run NAME --params ... --watch`: returns once the run is final."""
    params = json.dumps({"config": config})
    output = prefect(
        env, "deployment", "run", name, "--params", params, "--watch", "--watch-timeout", "900",
        timeout=960,
    )  # fmt: skip
    assert "Completed" in output, output[-2000:]
    return output


def mrpc_copy(mrpc_dir: Path, folder: Path, flip: bool) -> Path:
    """train (labels flipped or not) and validation of MRPC, in a folder of the test's."""
    folder.mkdir(parents=True)
    for split in ("train", "validation"):
        frame = pd.read_csv(mrpc_dir / f"{split}.tsv", sep="\t", quoting=3)
        if flip and split == "train":
            frame["label"] = 1 - frame["label"]
        frame.to_csv(folder / f"{split}.tsv", sep="\t", index=False, quoting=3)
    return folder


@pytest.fixture
def worker(prefect_server, tmp_path):
    """The work pool `local`, every deployment, and one process worker polling it."""
    env = prefect_server.env | {"FINETRACK_HOME": str(ROOT)}
    finetrack = str(Path(sys.executable).parent / "finetrack")
    for attempt in ("creates the pool", "finds it and redeploys"):  # `deploy` is idempotent
        result = subprocess.run(
            [finetrack, "deploy"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, f"{attempt}: {result.stdout}{result.stderr}"
    assert "deployments of" in result.stdout and "created" not in result.stdout
    # polling every second instead of Prefect's 10: each of the four runs starts sooner
    local = Worker("deployments", ROOT, env | {"PREFECT_WORKER_QUERY_SECONDS": "1"}, tmp_path)
    local.start()
    yield env
    stop_all([local])


def test_deployments_end_to_end(mrpc_dir, tmp_path, prefect_server, worker):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = {
        **SLICE,
        "tracking_uri": uri,
        "experiment_name": "deployed",
        "output_dir": str(tmp_path / "outputs"),
        "cache_dir": str(tmp_path / "cache"),
    }
    flipped = mrpc_copy(mrpc_dir, tmp_path / "flipped", flip=True)
    true = mrpc_copy(mrpc_dir, tmp_path / "true", flip=False)
    client = MlflowClient(uri)

    # 1. fine-tune: a run with per-epoch metrics, a registered model, the champion alias
    config = {**common, "data_dir": str(flipped), "registered_model_name": "e2e"}
    run_deployment(worker, "fine-tune/mrpc", config)
    (run,) = client.search_runs([client.get_experiment_by_name("deployed").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_f1")] == [1, 2]
    assert {"validation_accuracy", "validation_f1"} <= set(run.data.metrics)
    assert client.get_model_version_by_alias("e2e", "champion").run_id == run.info.run_id
    assert champion_version(client, "e2e") == "1"

    # 2. the nightly retrain deployment, as the server stores it
    with (
        temporary_settings({PREFECT_API_URL: prefect_server.api_url}),
        get_client(sync_client=True) as api,
    ):
        deployment = api.read_deployment_by_name("retrain/mrpc-nightly")
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * 0"]
    assert all(s.active for s in deployment.schedules)

    # 3. retrain on true labels: better than the flipped champion, promoted
    def retrain(data_dir: Path) -> None:
        train = {**common, "data_dir": str(data_dir)}
        settings = {"registered_model_name": "e2e", "hyperparameters": "config", "train": train}
        run_deployment(worker, "retrain/mrpc-nightly", settings)

    retrain(true)
    assert champion_version(client, "e2e") == "2"
    # 4. retrain on flipped labels again: worse than the champion, not promoted
    retrain(flipped)
    assert champion_version(client, "e2e") == "2"
    decisions = {
        str(v.version): client.get_run(v.run_id).data.tags["finetrack.promotion.promoted"]
        for v in client.search_model_versions("name='e2e'")
    }
    assert decisions == {"1": "True", "2": "True", "3": "False"}

    # 5. batch prediction with the champion
    rows = pd.read_csv(mrpc_dir / "test.tsv", sep="\t", quoting=3).head(6)
    source = tmp_path / "to_classify.tsv"
    rows.drop(columns=["label"]).to_csv(source, sep="\t", index=False, quoting=3)
    predict = {"input_path": str(source), "registered_model_name": "e2e", "tracking_uri": uri}
    run_deployment(worker, "predict/champion", predict)
    output = pd.read_csv(tmp_path / "to_classify.predictions.csv")
    assert len(output) == 6
    assert output["probability"].between(0, 1).all()
