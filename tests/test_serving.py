"""The logged model: loads with MLflow alone, keeps each row's prediction, and in fp32 gives
exactly the labels of plain forward passes of the same weights."""

import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from oracles import raw_split
from transformers import AutoTokenizer, set_seed

from tasks import packaging, tracking
from tasks.config import PACKAGED_MODEL
from tasks.model import load_model, resolve_model


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The packaged MiniLM with a seeded head, logged as the product logs a fine-tuned one."""
    folder = tmp_path_factory.mktemp("serving")
    set_seed(0)
    path = resolve_model(PACKAGED_MODEL)
    model, tokenizer = load_model(path, ["0", "1"]).eval(), AutoTokenizer.from_pretrained(path)
    uri = f"sqlite:///{folder}/mlflow.db"
    client = tracking.connect(uri)
    with tracking.tracked_run(client, "serving") as run_id:
        example = {"text": "a", "text_pair": "b"}
        package = packaging.ModelPackage(model, tokenizer, example, "# c", 128)
        run = packaging.Destination(run_id, tracking.experiment_id(client, "serving"))
        info = packaging.log_classifier_model(client, run, package)
    return uri, info.model_uri, model, tokenizer


def plain_probabilities(model, tokenizer, frame: pd.DataFrame) -> np.ndarray:
    """Row by row, fp32, no padding: the reference."""
    out = []
    with torch.inference_mode():
        for text, pair in zip(frame["sentence1"], frame["sentence2"], strict=True):
            batch = tokenizer(text, pair, truncation=True, max_length=128, return_tensors="pt")
            out.append(torch.softmax(model(**batch).logits, dim=-1)[0].numpy())
    return np.array(out)


def test_fp32_labels_equal_plain_forward_row_by_row(logged, mrpc_dir):
    uri, model_uri, model, tokenizer = logged
    mlflow.set_tracking_uri(uri)
    frame = raw_split(mrpc_dir, "test", 150)  # three batches of 64, 64 and 22
    expected = plain_probabilities(model, tokenizer, frame)
    served = mlflow.pyfunc.load_model(model_uri).predict(
        pd.DataFrame({"text": frame["sentence1"], "text_pair": frame["sentence2"]}),
        params={"precision": "fp32"},
    )
    labels = expected.argmax(axis=-1)
    assert len(set(labels)) == 2  # the labels vary, so a shuffled row would show
    assert served["label"].astype(int).tolist() == labels.tolist()
    np.testing.assert_allclose(served["score"], expected.max(axis=-1), atol=1e-5)


LOAD_WITHOUT_PROJECT = """
import sys
sys.modules["tasks"] = sys.modules["flows"] = None  # importing either now fails
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
print(model.predict(pd.DataFrame([{"text": "A cat .", "text_pair": "A cat sat ."}]))["label"][0])
"""


def test_loads_with_mlflow_alone(logged, tmp_path):
    uri, model_uri, *_ = logged
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PROJECT, uri, model_uri],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] in {"0", "1"}


def test_promotion_scores_the_logged_model_in_fp32(logged, mrpc_dir):
    """The registry's scoring asks the served model for fp32: the same labels as plain fp32
    forward passes, whatever the machine's bf16 support."""
    from sklearn.metrics import f1_score

    from tasks.evaluation import compute_metrics
    from tasks.registry import predict_labels
    from tasks.uncertainty import Scoring

    uri, model_uri, model, tokenizer = logged
    mlflow.set_tracking_uri(uri)
    frame = raw_split(mrpc_dir, "validation", 100)
    holdout = pd.DataFrame(
        {"text": frame["sentence1"], "text_pair": frame["sentence2"], "label": frame["label"]}
    )
    expected = plain_probabilities(model, tokenizer, frame).argmax(axis=-1)
    predicted = predict_labels(model_uri, holdout, ["0", "1"])  # as promotion scores
    scores = compute_metrics(predicted, holdout["label"].to_numpy(), Scoring(2, positive=1))
    assert scores["f1"] == pytest.approx(f1_score(frame["label"], expected), abs=1e-12)
