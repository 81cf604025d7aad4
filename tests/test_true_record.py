"""Every number a fine-tune records, checked against an independent path.

The flow runs with the product's real defaults for everything that scores and records
(evaluation batch, length grouping, bf16 auto) and with each speed option switched the other
way, on a slice of real MRPC whose held-out rows span several evaluation batches; only the
training recipe is set (batch 8, 4 epochs) so that 128 rows give a model that predicts both
classes. The recorded held-out metrics must equal the best epoch that the run
itself logged, and the predictions CSV must hold, row by row, what the logged model (loaded
with MLflow alone) says about that row of the data file.
"""

import asyncio
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import small_train_config
from mlflow.tracking import MlflowClient
from oracles import (
    artifact,
    best_epoch,
    check_confusion,
    compare_with_pyfunc,
    markdown_table,
    prefect_artifact,
    raw_split,
    scores,
)
from prefect import get_client
from prefect.testing.utilities import prefect_test_harness
from safetensors.torch import load_file

from flows.fine_tune import fine_tune
from tasks.config import FineTuneConfig
from tasks.model import packaged_model_dir
from tasks.reporting import FineTuneResult
from tasks.train import use_bf16

pytestmark = pytest.mark.slow

NATIVE_BF16 = use_bf16("auto")
VARIANTS = {
    "defaults": {},
    "grouping-off-accuracy-objective": {"group_by_length": False, "objective_metric": "accuracy"},
    "bf16-" + ("off" if NATIVE_BF16 else "on"): {"bf16": "off" if NATIVE_BF16 else "on"},
}


@pytest.fixture(scope="module")
def prefect_backend():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclass
class Recorded:
    config: FineTuneConfig
    summary: FineTuneResult
    flow_run_id: str
    client: MlflowClient
    folder: Path

    @property
    def run(self):
        return self.client.get_run(self.summary.run_id)

    @property
    def precision(self) -> str:
        return "bf16" if self.summary.bf16 else "fp32"


@pytest.fixture(scope="module", params=list(VARIANTS))
def recorded(request, mrpc_dir, tmp_path_factory, prefect_backend) -> Recorded:
    folder = tmp_path_factory.mktemp(request.param)
    config = small_train_config(
        mrpc_dir,
        folder,
        # enough for a model that predicts both classes on the slice: at the default batch of
        # 32, 128 rows make 4 steps an epoch, too few to leave the all-positive answer; the
        # full default recipe on 512 rows (measured) kept its all-positive epoch 1 as the best
        # by F1 (0.8122 against 0.8025 and 0.8086), where a shuffle would not show either
        max_train_samples=128,
        batch_size=8,
        num_epochs=4,
        learning_rate=2e-4,
        experiment_name="truth",
        **VARIANTS[request.param],
    )
    state = fine_tune(config, return_state=True)
    summary = state.result()
    client = MlflowClient(config.tracking_uri)
    return Recorded(config, summary, str(state.state_details.flow_run_id), client, folder)


def test_heldout_metrics_are_the_best_epochs(recorded):
    objective = recorded.config.objective_metric
    best = best_epoch(recorded.client, recorded.summary.run_id, objective)
    metrics = recorded.run.data.metrics
    assert metrics["validation_accuracy"] == pytest.approx(best["accuracy"], abs=1e-9)
    assert metrics["validation_f1"] == pytest.approx(best["f1"], abs=1e-9)
    assert metrics["validation_loss"] == pytest.approx(best["loss"], abs=1e-4)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_predictions_are_the_logged_models(recorded, mrpc_dir, split):
    rows = recorded.config.max_eval_samples
    raw = raw_split(mrpc_dir, split, rows)
    folder = recorded.folder / "artifacts"
    predictions = artifact(
        recorded.client, recorded.summary.run_id, f"predictions_{split}.csv", folder
    )

    found = compare_with_pyfunc(predictions, raw, recorded.summary.model_uri, recorded.precision)

    # both classes are predicted, so a shuffle would change the metrics as well
    assert set(pd.read_csv(predictions)["predicted"]) == {0, 1}
    allowed = 0 if recorded.precision == "fp32" else max(1, rows // 20)
    assert len(found.rows) <= allowed, f"{split}: {found.rows} flipped between Trainer and pyfunc"
    recorded_metrics = recorded.run.data.metrics
    for name, value in found.pyfunc_scores.items():
        # each flipped row moves accuracy by 1/rows at most; F1 a little more
        assert recorded_metrics[f"{split}_{name}"] == pytest.approx(
            value, abs=2.5 * len(found.rows) / rows + 1e-9
        )


@pytest.mark.parametrize("split", ["validation", "test"])
def test_confusion_matrix_is_a_recount_of_the_csv(recorded, split):
    folder = recorded.folder / "artifacts"
    run_id = recorded.summary.run_id
    check_confusion(
        artifact(recorded.client, run_id, f"confusion_matrix_{split}.json", folder),
        artifact(recorded.client, run_id, f"predictions_{split}.csv", folder),
    )
    csv = artifact(recorded.client, run_id, f"predictions_{split}.csv", folder)
    table = pd.read_csv(csv, dtype=str)
    recount = scores(table["label"].astype(int), table["predicted"].astype(int))
    for name, value in recount.items():
        assert recorded.run.data.metrics[f"{split}_{name}"] == pytest.approx(value, abs=1e-9)


def test_logged_model_belongs_to_the_runs_experiment(recorded, tmp_path, monkeypatch):
    run = recorded.run
    mlflow.set_tracking_uri(recorded.config.tracking_uri)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert [m.source_run_id for m in models] == [run.info.run_id]
    experiment = recorded.client.get_experiment(run.info.experiment_id)
    assert models[0].artifact_location.startswith(experiment.artifact_location)
    assert mlflow.search_logged_models(experiment_ids=["0"], output_format="list") == []
    # read back through the tracking URI alone, from another working folder
    monkeypatch.chdir(tmp_path)
    model = mlflow.pyfunc.load_model(recorded.summary.model_uri)
    pair = pd.DataFrame([{"text": "A cat sat on the mat .", "text_pair": "The mat had a cat ."}])
    assert len(model.predict(pair)) == 1


async def _flow_run_name(flow_run_id: str) -> str:
    async with get_client() as client:
        return (await client.read_flow_run(flow_run_id)).name


def test_mlflow_run_is_named_after_the_flow_run(recorded):
    assert recorded.run.info.run_name == asyncio.run(_flow_run_name(recorded.flow_run_id))


def test_prefect_summary_artifact_matches_the_mlflow_run(recorded):
    text = prefect_artifact(recorded.flow_run_id, "fine-tune-summary")
    assert recorded.summary.run_id in text
    metrics = recorded.run.data.metrics
    table = markdown_table(text)
    assert set(table) == {"validation", "test"}
    for split, values in table.items():
        assert set(values) == {"accuracy", "f1", "loss"}
        for name, value in values.items():
            assert value == pytest.approx(metrics[f"{split}_{name}"], abs=5e-5)


def test_run_description_and_model_card_state_the_recorded_numbers(recorded, tmp_path):
    run = recorded.run
    metrics = run.data.metrics
    description = run.data.tags["mlflow.note.content"]
    table = markdown_table(description)
    for split in ("validation", "test"):
        for name in ("accuracy", "f1", "loss"):
            assert table[split][name] == pytest.approx(metrics[f"{split}_{name}"], abs=5e-5)
    assert f"learning_rate {recorded.config.learning_rate}" in description

    model_id = recorded.summary.model_uri.removeprefix("models:/")
    location = recorded.client.get_logged_model(model_id).artifact_location
    card = Path(
        mlflow.artifacts.download_artifacts(f"{location}/README.md", dst_path=str(tmp_path))
    )
    text = card.read_text()
    assert run.data.params["data_fingerprint"] in text
    assert "non-commercial" in text  # MRPC's licence travels with the model
    scores_table = markdown_table(text[text.index("## Scores") :])
    for split in ("validation", "test"):
        assert scores_table[split]["accuracy"] == pytest.approx(
            metrics[f"{split}_accuracy"], abs=5e-5
        )
    precision = "bf16 autocast" if recorded.summary.bf16 else "fp32"
    assert f"Scored by `trainer.predict` in {precision}" in text
    rows = raw_split(recorded.config.data_dir, "validation", recorded.config.max_eval_samples)
    assert f"'rows': {len(rows)}" in text


def test_recorded_frozen_layers_are_the_ones_the_logged_model_kept(recorded, tmp_path):
    """Recounted from the logged weights: the leading layers still equal to the base model's
    (and the embeddings, when any layer was frozen)."""
    model_id = recorded.summary.model_uri.removeprefix("models:/")
    location = recorded.client.get_logged_model(model_id).artifact_location
    folder = Path(mlflow.artifacts.download_artifacts(location, dst_path=str(tmp_path)))
    (weights,) = folder.rglob("model.safetensors")
    logged = {name.removeprefix("bert."): w for name, w in load_file(weights).items()}
    base = load_file(packaged_model_dir() / "model.safetensors")

    def unchanged(prefix: str) -> bool:
        names = [name for name in base.keys() & logged.keys() if name.startswith(prefix)]
        return bool(names) and all(base[name].equal(logged[name]) for name in names)

    kept = 0
    while unchanged(f"encoder.layer.{kept}."):
        kept += 1
    assert kept == int(recorded.run.data.params["frozen_layers"])
    assert unchanged("embeddings.") == (kept > 0)
    assert kept == (0 if recorded.summary.bf16 else 2)  # 'auto': a third of MiniLM's 6 in fp32
    # their outputs are run once and kept by default, wherever layers are frozen
    assert recorded.run.data.params["frozen_features_cached"] == str(kept > 0)
