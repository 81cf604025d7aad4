"""Prepare once, publish once: a flow loads and tokenizes its data once however many runs
train from it, and never reads back from MLflow the run it has just written."""

import functools
import sys
from collections import Counter

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from oracles import pyfunc_predictions, raw_split, scores

from flows import steps
from flows.fine_tune import fine_tune
from flows.retrain import retrain
from flows.search import search_flow
from tasks.config import IntRange, RetrainConfig, SearchConfig
from tests.support.data import small_train_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_backend")]


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """How often the data were loaded and tokenized (the real steps, counted)."""
    counted = Counter()
    for name in ("load_data", "tokenize"):
        step = getattr(steps, name)

        def counting(*args, _fn=step.fn, _name=name, **kwargs):
            counted[_name] += 1
            return _fn(*args, **kwargs)

        monkeypatch.setattr(step, "fn", functools.wraps(step.fn)(counting))
    return counted


@pytest.fixture
def run_reads(monkeypatch) -> list[tuple[str, str]]:
    """(run id, calling module) of every `MlflowClient.get_run`, MLflow's own included."""
    reads = []
    real = MlflowClient.get_run

    def get_run(self, run_id):
        reads.append((run_id, sys._getframe(1).f_globals.get("__name__", "")))
        return real(self, run_id)

    monkeypatch.setattr(MlflowClient, "get_run", get_run)
    return reads


@pytest.fixture
def model_loads(monkeypatch) -> Counter:
    """How often each logged model was loaded to be scored (`mlflow.pyfunc.load_model`)."""
    loads = Counter()
    real = mlflow.pyfunc.load_model

    def load_model(model_uri, *args, **kwargs):
        loads[model_uri] += 1
        return real(model_uri, *args, **kwargs)

    monkeypatch.setattr(mlflow.pyfunc, "load_model", load_model)
    return loads


def test_search_with_confirmation_loads_and_tokenizes_once(mrpc_dir, tmp_path, calls, model_loads):
    train = small_train_config(
        mrpc_dir, tmp_path, max_train_samples=24, max_eval_samples=20,
        experiment_name="once", registered_model_name="once-model", onnx_export="fp32",
    )  # fmt: skip
    config = SearchConfig(
        train=train,
        storage=f"sqlite:///{tmp_path}/optuna.db",
        study_name="once",
        n_trials=2,
        num_epochs_range=IntRange(low=1, high=1),
        pruner="none",
        confirm_top_k=2,
        confirm_seeds=2,  # 2 trials and 4 confirmation runs train from one prepared input
    )
    summary = search_flow(config)
    assert len(summary["winner"]["run_ids"]) == 2 and summary["decision"] is not None
    assert calls == {"load_data": 1, "tokenize": 1}
    # the winner's model scored the validation rows once, for its export's parity and its
    # promotion alike; each candidate's model and export were scored once (the other loads
    # are MLflow's own check of the input example, from a local folder, while logging)
    logged = {uri: count for uri, count in model_loads.items() if uri.startswith("models:/")}
    assert logged[summary["winner"]["model_uri"]] == 1
    assert len(logged) == 2 * 2 and set(logged.values()) == {1}, model_loads
    # the labels its promotion reused are the winner's own: its recorded score is a rescoring
    # of its logged model, loaded with MLflow alone, on the same 20 validation rows
    rows = raw_split(mrpc_dir, "validation", 20)
    rescored = pyfunc_predictions(summary["winner"]["model_uri"], rows, {"precision": "fp32"})
    decision = summary["decision"]
    expected = scores(rows["label"], rescored["label"])[decision.metric]
    assert decision.challenger_score == pytest.approx(expected, abs=1e-12)
    assert_version_gives_export_parity(
        MlflowClient(train.tracking_uri), summary["winner"]["run_id"], "once-model",
        decision.challenger_version,
    )  # fmt: skip


def assert_version_gives_export_parity(
    client: MlflowClient, run_id: str, model_name: str, version: str
) -> None:
    """The registered version's description gives its run's recorded export parity and
    speed-up."""
    metrics = client.get_run(run_id).data.metrics
    description = client.get_model_version(model_name, version).description
    assert f"on {metrics['onnx_label_agreement']:.2%} of the validation rows" in description
    assert f"{metrics['onnx_speedup']:.2f}x the full model's rows per second" in description


def test_retrain_loads_and_tokenizes_once(mrpc_dir, tmp_path, calls):
    train = small_train_config(
        mrpc_dir, tmp_path, max_train_samples=24, max_eval_samples=20, num_epochs=1,
        experiment_name="once-retrain", onnx_export="fp32",
    )  # fmt: skip
    result = retrain(RetrainConfig(train=train, registered_model_name="once-rt"))
    assert result["decision"].promoted
    assert calls == {"load_data": 1, "tokenize": 1}
    assert_version_gives_export_parity(
        MlflowClient(train.tracking_uri), result["run_id"], "once-rt",
        result["decision"].challenger_version,
    )  # fmt: skip


def test_fine_tune_never_reads_back_its_own_run(mrpc_dir, tmp_path, calls, run_reads):
    config = small_train_config(
        mrpc_dir, tmp_path, max_train_samples=24, max_eval_samples=20, num_epochs=1,
        experiment_name="once-ft", registered_model_name="once-ft", onnx_export="fp32",
        calibrate="temperature",
    )  # fmt: skip
    summary = fine_tune(config)
    assert summary.model_uri and summary.onnx and summary.decision  # every publishing step
    own = [module for run_id, module in run_reads if run_id == summary.run_id]
    ours = [module for module in own if module.startswith(("flows", "tasks"))]
    assert ours == [], own
    MlflowClient(config.tracking_uri).get_run(summary.run_id)  # a read is counted
    assert run_reads[-1] == (summary.run_id, __name__)
    assert calls == {"load_data": 1, "tokenize": 1}
