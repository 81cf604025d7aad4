"""Champion promotion with models whose predictions are known, so better and worse are sure."""

import threading

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from tasks import registry

# 6 of 8 rows are label 1: "always 1" scores accuracy 0.75 / F1 0.857, "always 0" 0.25 / 0.0.
FRAME = pd.DataFrame(
    {
        "text": [f"sentence {i}" for i in range(8)],
        "text_pair": [f"other {i}" for i in range(8)],
        "label": [1, 1, 1, 1, 1, 1, 0, 0],
    }
)
LABELS = ["0", "1"]


class Constant(mlflow.pyfunc.PythonModel):
    """Predicts one label for every row, like the transformers flavour's output."""

    def __init__(self, label: str):
        self.label = label

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"label": [self.label] * len(model_input), "score": 1.0})


@pytest.fixture
def client(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def register_constant(client, label: str) -> str:
    with mlflow.start_run() as run:
        output = pd.DataFrame({"label": [label], "score": [1.0]})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Constant(label),
            signature=infer_signature(FRAME[["text", "text_pair"]], output),
            pip_requirements=[],
        )
    return registry.register(client, info.model_uri, "m", run.info.run_id)


def test_first_model_becomes_champion_then_only_better_ones(client):
    worse = register_constant(client, "0")
    first = registry.promote_if_better(client, "m", worse, FRAME, LABELS)
    assert first.promoted and first.champion_version is None
    assert first.challenger_score == 0.0

    better = register_constant(client, "1")
    second = registry.promote_if_better(client, "m", better, FRAME, LABELS)
    assert second.promoted and second.champion_version == worse
    assert second.challenger_score == pytest.approx(2 * 0.75 / 1.75)
    assert registry.champion_version(client, "m") == better

    another_worse = register_constant(client, "0")
    third = registry.promote_if_better(client, "m", another_worse, FRAME, LABELS)
    assert not third.promoted
    assert registry.champion_version(client, "m") == better


def test_margin_blocks_small_gains(client):
    base = register_constant(client, "1")
    registry.promote_if_better(client, "m", base, FRAME, LABELS)
    same = register_constant(client, "1")
    decision = registry.promote_if_better(client, "m", same, FRAME, LABELS, margin=0.0)
    assert not decision.promoted  # equal is not better
    assert registry.champion_version(client, "m") == base


def test_concurrent_promotions_leave_the_best_champion(client):
    from prefect.testing.utilities import prefect_test_harness

    from flows.promotion import promote

    versions = [register_constant(client, label) for label in ("1", "0", "0", "1")]
    decisions = []
    with prefect_test_harness(server_startup_timeout=120):
        threads = [
            threading.Thread(
                target=lambda v=v: decisions.append(promote(client, "m", v, FRAME, LABELS))
            )
            for v in versions
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(decisions) == 4
    champion = registry.champion_version(client, "m")
    assert champion in {versions[0], versions[3]}  # an "always 1" model, never a worse one
    # serialised checks: each saw the previous result, so at most one "1" model promoted
    promoted_ones = [d for d in decisions if d.promoted and d.challenger_score > 0]
    assert len(promoted_ones) == 1
