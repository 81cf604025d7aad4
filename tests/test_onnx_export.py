"""The ONNX Runtime export: logged beside the full model, its parity recorded truly, served
without torch, and used by `predict --runtime onnx` only when it passed."""

import subprocess
import sys
from pathlib import Path

import mlflow
import onnx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from oracles import pyfunc_predictions, raw_split
from sklearn.metrics import accuracy_score, f1_score

from flows.fine_tune import fine_tune
from flows.predict import predict
from tasks import tracking
from tasks.config import FineTuneConfig, PredictConfig
from tasks.model_card import SERVED_BY_TORCH
from tasks.prediction import NoModelError, onnx_export_uri
from tests.support.data import small_train_config

pytestmark = pytest.mark.slow
ROWS = 150  # validation rows: the parity is recorded over more than one batch of 64
# the bar the README states: labels agree on at least 99.5% of the rows, and the accuracy is
# at most 0.3 point below the full model's
MIN_AGREEMENT, MAX_DROP = 0.995, 0.003


def fit_by_the_bar(metrics: dict[str, float]) -> bool:
    """Whether the recorded parity (itself checked against a rescoring) clears the bar."""
    return metrics["onnx_label_agreement"] >= MIN_AGREEMENT and (
        metrics["onnx_accuracy_drop"] <= MAX_DROP
    )


@pytest.fixture(scope="module")
def exported(mrpc_dir, tmp_path_factory, prefect_backend):
    """One fine-tune per export precision, each registered as a version of `onnx`."""
    tmp_path = tmp_path_factory.mktemp("onnx")
    runs = {}
    for precision in ("fp32", "int8"):
        config = small_train_config(
            mrpc_dir,
            tmp_path,
            max_train_samples=128,
            max_eval_samples=ROWS,
            batch_size=8,  # 16 steps an epoch: a model that predicts both classes
            num_epochs=2,
            learning_rate=2e-4,
            onnx_export=precision,
            registered_model_name="onnx",
        )
        runs[precision] = fine_tune(config)
    return tmp_path, runs


def card(client: MlflowClient, model_uri: str, folder) -> str:
    """A logged model's README.md, downloaded from its artifact location."""
    location = client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    folder.mkdir(parents=True)
    path = mlflow.artifacts.download_artifacts(f"{location}/README.md", dst_path=str(folder))
    return Path(path).read_text()


def exported_graph(client: MlflowClient, model_uri: str, folder: Path) -> onnx.GraphProto:
    """The graph of a logged ONNX export, downloaded from its artifact location."""
    location = client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    path = mlflow.artifacts.download_artifacts(
        f"{location}/artifacts/onnx/model.onnx", dst_path=str(folder)
    )
    return onnx.load(path, load_external_data=False).graph


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_recorded_parity_is_a_rescoring_of_both_models(exported, mrpc_dir, precision):
    tmp_path, runs = exported
    result = runs[precision]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(client.tracking_uri)
    run = client.get_run(result.run_id)
    onnx_uri = run.data.tags["finetrack.onnx.model_uri"]
    assert onnx_uri != result.model_uri
    assert {output.model_id for output in run.outputs.model_outputs} == {
        uri.removeprefix("models:/") for uri in (onnx_uri, result.model_uri)
    }

    frame = raw_split(mrpc_dir, "validation", ROWS)
    full = pyfunc_predictions(result.model_uri, frame, {"precision": "fp32"})["label"]
    exported_labels = pyfunc_predictions(onnx_uri, frame)["label"]
    metrics = run.data.metrics
    agreement = (full == exported_labels).mean()
    drop = accuracy_score(frame["label"], full) - accuracy_score(frame["label"], exported_labels)
    assert metrics["onnx_label_agreement"] == pytest.approx(agreement, abs=1e-12)
    assert metrics["onnx_validation_accuracy"] == pytest.approx(
        accuracy_score(frame["label"], exported_labels), abs=1e-12
    )
    assert metrics["onnx_validation_f1"] == pytest.approx(
        f1_score(frame["label"], exported_labels), abs=1e-12
    )
    assert metrics["onnx_accuracy_drop"] == pytest.approx(drop, abs=1e-12)
    fit = agreement >= MIN_AGREEMENT and drop <= MAX_DROP
    assert run.data.tags["finetrack.onnx.fit_to_serve"] == str(fit).lower()
    assert result.onnx.fit_to_serve == fit
    assert f"{agreement:.2%}" in run.data.tags["mlflow.note.content"]
    # the speed-up is the ratio of the two rates recorded, each timed within the run
    full_rate, onnx_rate = metrics["full_model_rows_per_second"], metrics["onnx_rows_per_second"]
    assert metrics["onnx_speedup"] == pytest.approx(onnx_rate / full_rate, rel=1e-9)
    run_seconds = (run.info.end_time - run.info.start_time) / 1000
    assert ROWS / full_rate + ROWS / onnx_rate < run_seconds
    assert (
        f"{metrics['onnx_speedup']:.2f}x the full model's rows per second"
        in (run.data.tags["mlflow.note.content"])
    )
    if precision == "int8":  # blockwise int8 weights, int8 products
        graph = exported_graph(client, onnx_uri, tmp_path / "int8-graph")
        blockwise = [node for node in graph.node if node.op_type == "MatMulNBits"]
        assert len(blockwise) == 36  # Q, K, V, output and both FFN matrices of 6 layers
        for node in blockwise:
            settings = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert (settings["bits"], settings["block_size"], settings["accuracy_level"]) == (
                8, 16, 4,
            )  # fmt: skip
    # each model's card says how that model predicts; the export's gives its parity
    full_card = card(client, result.model_uri, tmp_path / precision / "full")
    onnx_card = card(client, onnx_uri, tmp_path / precision / "onnx")
    assert SERVED_BY_TORCH in full_card and SERVED_BY_TORCH not in onnx_card
    assert f"ONNX Runtime export ({precision}" in onnx_card
    assert f"on {agreement:.2%} of the validation rows" in onnx_card
    assert f"{metrics['onnx_speedup']:.2f}x" in onnx_card
    # the registered version's description gives the export's parity and speed-up too
    version = "1" if precision == "fp32" else "2"
    description = client.get_model_version("onnx", version).description
    assert f"on {agreement:.2%} of the validation rows" in description
    assert f"{metrics['onnx_speedup']:.2f}x" in description


def test_fp32_export_gives_the_full_models_fp32_scores(exported, mrpc_dir):
    """An fp32 graph computes what the torch model computes: scores to float precision."""
    tmp_path, runs = exported
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    result = runs["fp32"]
    frame = raw_split(mrpc_dir, "test", 150)  # batches of 64, 64, 22 with other lengths
    full = pyfunc_predictions(result.model_uri, frame, {"precision": "fp32"})
    onnx_scores = pyfunc_predictions(result.onnx.model_uri, frame)
    assert full["label"].nunique() == 2  # a model that predicts both classes
    assert onnx_scores["label"].tolist() == full["label"].tolist()
    assert (onnx_scores["score"] - full["score"]).abs().max() < 1e-4


@pytest.mark.parametrize("served", ["full model, fp32", "fp32 export", "int8 export"])
def test_a_row_does_not_depend_on_its_batch_neighbours(exported, mrpc_dir, served):
    """The same 150 rows in batches of 1, 7 and 64 (other neighbours, other padding): every
    row's score within 1e-5, every label equal; the int8 export quantises each row's
    activations on their own."""
    tmp_path, runs = exported
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    result = runs["int8" if served.startswith("int8") else "fp32"]
    uri = result.model_uri if served.startswith("full") else result.onnx.model_uri
    frame = raw_split(mrpc_dir, "test", 150)
    by_size = {
        size: pyfunc_predictions(uri, frame, {"precision": "fp32", "batch_size": size})
        for size in (1, 7, 64)
    }
    for size in (1, 7):
        assert by_size[size]["label"].tolist() == by_size[64]["label"].tolist()
        assert (by_size[size]["score"] - by_size[64]["score"]).abs().max() < 1e-5


def predict_with_onnx(tmp_path: Path, mrpc_dir, precision: str):
    """`finetrack predict --runtime onnx` of the precision's registered version on 70 test rows
    in batches of 32; returns the rows and the outcome (or raises as predict does)."""
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(tracking_uri)
    rows = raw_split(mrpc_dir, "test", 70)
    path = tmp_path / f"to-predict-{precision}.csv"
    rows.drop(columns="label").to_csv(path, index=False)
    config = PredictConfig(
        input_path=path,
        model_version="1" if precision == "fp32" else "2",
        registered_model_name="onnx",
        tracking_uri=tracking_uri,
        runtime="onnx",
        batch_size=32,
    )
    return rows, predict(config)


def assert_served_by_the_export(outcome: dict, rows: pd.DataFrame, onnx_uri: str) -> None:
    """The written predictions are the export's own, scored through `mlflow.pyfunc` in batches
    of another size (64)."""
    assert outcome["model_uri"] == onnx_uri
    written = pd.read_csv(outcome["output_path"])
    expected = pyfunc_predictions(onnx_uri, rows)
    assert written["predicted_label"].tolist() == expected["label"].tolist()
    assert (written["probability"] - expected["score"]).abs().max() < 1e-5


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_with_onnx_runtime_only_when_fit(exported, mrpc_dir, precision, prefect_backend):
    tmp_path, runs = exported
    result = runs[precision]
    metrics = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(result.run_id).data.metrics
    fit = fit_by_the_bar(metrics)
    if precision == "fp32":
        assert fit  # the fp32 graph computes what torch computes: the served path is tested
    if not fit:
        with pytest.raises(NoModelError, match="failed the parity check"):
            predict_with_onnx(tmp_path, mrpc_dir, precision)
        return
    rows, outcome = predict_with_onnx(tmp_path, mrpc_dir, precision)
    assert_served_by_the_export(outcome, rows, result.onnx.model_uri)


def test_predict_serves_an_int8_export_marked_fit(exported, mrpc_dir, prefect_backend):
    """The served path of the int8 export, whatever this machine measured: its run's tag set to
    fit."""
    tmp_path, runs = exported
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = runs["int8"].run_id
    recorded = client.get_run(run_id).data.tags["finetrack.onnx.fit_to_serve"]
    client.set_tag(run_id, "finetrack.onnx.fit_to_serve", "true")
    try:
        rows, outcome = predict_with_onnx(tmp_path, mrpc_dir, "int8")
    finally:
        client.set_tag(run_id, "finetrack.onnx.fit_to_serve", recorded)
    assert_served_by_the_export(outcome, rows, runs["int8"].onnx.model_uri)


def test_predict_onnx_refused_for_an_export_that_failed_parity(exported):
    """The refusal, whatever this machine measured: the fp32 run's tag set to failed."""
    tmp_path, runs = exported
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = runs["fp32"].run_id
    client.set_tag(run_id, "finetrack.onnx.fit_to_serve", "false")
    try:
        with pytest.raises(NoModelError, match=r"failed the parity check \(labels agree on 100"):
            onnx_export_uri(client, run_id, "onnx v1")
    finally:
        client.set_tag(run_id, "finetrack.onnx.fit_to_serve", "true")


def test_predict_onnx_refused_without_an_export(tmp_path):
    client = tracking.connect(f"sqlite:///{tmp_path}/mlflow.db")
    with tracking.tracked_run(client, "no-export") as run_id:
        pass
    with pytest.raises(NoModelError, match="has no ONNX export"):
        onnx_export_uri(client, run_id, "m v1")


SERVE_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = sys.modules["tasks"] = sys.modules["flows"] = None  # imports now fail
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
print(model.predict(pd.DataFrame([{"text": "A cat .", "text_pair": "A cat sat ."}]))["label"][0])
"""


def test_onnx_model_serves_without_torch_or_the_project(exported, tmp_path):
    tmp, runs = exported
    result = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, f"sqlite:///{tmp}/mlflow.db",
         runs["int8"].onnx.model_uri],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] in {"0", "1"}


def test_onnx_export_refused_up_front_without_onnxruntime(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    with pytest.raises(ValueError, match=r"needs onnxruntime: pip install 'finetrack\[onnx\]'"):
        FineTuneConfig(onnx_export="int8")


def test_int8_export_refused_up_front_with_an_older_onnxruntime(monkeypatch):
    """Before any run: an onnxruntime without the 8-bit MatMulNBits quantiser."""
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "1.21.1" if name == "onnxruntime" else real(name),
    )
    with pytest.raises(ValueError, match=r"the int8 export needs onnxruntime>=1\.22 \(1\.21\.1"):
        FineTuneConfig(onnx_export="int8")
    assert FineTuneConfig(onnx_export="fp32").onnx_export == "fp32"
