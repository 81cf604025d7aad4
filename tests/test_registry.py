"""Champion promotion with models whose predictions are known, so better and worse are sure."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from tasks import registry
from tasks.evaluation import compute_metrics
from tasks.uncertainty import Scoring

# 6 of 8 rows are label 1: "always 1" scores accuracy 0.75 / F1 0.857, "always 0" 0.25 / 0.0.
FRAME = pd.DataFrame(
    {
        "text": [f"sentence {i}" for i in range(8)],
        "text_pair": [f"other {i}" for i in range(8)],
        "label": [1, 1, 1, 1, 1, 1, 0, 0],
    }
)
LABELS = ["0", "1"]
HOLDOUT = registry.Holdout(FRAME, LABELS, Scoring(2, positive=1))
F1, ACCURACY = registry.PromotionPolicy("f1"), registry.PromotionPolicy("accuracy")


class Constant(mlflow.pyfunc.PythonModel):
    """Predicts one label for every row, like the transformers flavour's output; `delay`
    seconds per call stand in for a real model's scoring time."""

    def __init__(self, label: str, delay: float = 0.0):
        self.label = label
        self.delay = delay

    def predict(self, context, model_input, params=None):
        time.sleep(self.delay)
        return pd.DataFrame({"label": [self.label] * len(model_input), "score": 1.0})


@pytest.fixture
def client(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


class FirstFive(mlflow.pyfunc.PythonModel):
    """Label 1 for the rows whose number (in the text) is below 5, label 0 for the others:
    on FRAME that is right on 7 of 8 rows (TP 5, FN 1, FP 0), and wrong on rows put out of
    order."""

    def predict(self, context, model_input, params=None):
        numbers = model_input["text"].str.split().str[-1].astype(int)
        return pd.DataFrame({"label": (numbers < 5).astype(int).astype(str), "score": 0.9})


def register_model(client, python_model) -> tuple[str, str]:
    """Log and register a pyfunc model; its version and the run that logged it."""
    with mlflow.start_run() as run:
        output = pd.DataFrame({"label": ["1"], "score": [1.0]})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            signature=infer_signature(FRAME[["text", "text_pair"]], output),
            pip_requirements=[],
        )
    return registry.register(client, info.model_uri, "m", run.info.run_id), run.info.run_id


def register_constant(client, label: str, delay: float = 0.0) -> str:
    return register_model(client, Constant(label, delay))[0]


def test_scores_follow_each_row_and_versions_name_their_run(client):
    version, run_id = register_model(client, FirstFive())
    predicted = registry.predict_labels(f"models:/m/{version}", FRAME, LABELS)
    assert compute_metrics(predicted, FRAME["label"].to_numpy(), HOLDOUT.scoring) == pytest.approx(
        {"accuracy": 7 / 8, "f1": 2 * 5 / (2 * 5 + 0 + 1)}  # by hand: TP 5, FP 0, FN 1
    )
    decision = registry.promote_if_better(client, "m", version, HOLDOUT, ACCURACY)
    assert decision.challenger_score == 7 / 8 and decision.metric == "accuracy"
    stored = client.get_model_version("m", version)
    assert stored.run_id == run_id and stored.tags["finetrack.run_id"] == run_id


def test_first_model_becomes_champion_then_only_better_ones(client):
    worse = register_constant(client, "0")
    first = registry.promote_if_better(client, "m", worse, HOLDOUT, F1)
    assert first.promoted and first.champion_version is None
    assert first.challenger_score == 0.0

    better = register_constant(client, "1")
    second = registry.promote_if_better(client, "m", better, HOLDOUT, F1)
    assert second.promoted and second.champion_version == worse
    assert second.challenger_score == pytest.approx(2 * 0.75 / 1.75)
    assert registry.champion_version(client, "m") == better

    another_worse = register_constant(client, "0")
    third = registry.promote_if_better(client, "m", another_worse, HOLDOUT, F1)
    assert not third.promoted
    assert registry.champion_version(client, "m") == better


def test_margin_blocks_small_gains(client):
    base = register_constant(client, "1")
    registry.promote_if_better(client, "m", base, HOLDOUT, F1)
    same = register_constant(client, "1")
    decision = registry.promote_if_better(client, "m", same, HOLDOUT, F1)
    assert not decision.promoted  # equal is not better
    assert registry.champion_version(client, "m") == base


def test_concurrent_promotions_leave_the_best_champion(client, prefect_backend):
    from flows.promotion import promote

    versions = [register_constant(client, label) for label in ("1", "0", "0", "1")]
    decisions = []
    threads = [
        threading.Thread(target=lambda v=v: decisions.append(promote(client, "m", v, HOLDOUT, F1)))
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


# Run in a fresh process: promote one version once every process of the test is ready.
PROMOTE_WHEN_ALL_READY = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from flows.promotion import ensure_limit, promote
from test_registry import F1, HOLDOUT

uri, version, ready, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
client = MlflowClient(uri)
ensure_limit("promote-m")
(ready / version).touch()
while len(list(ready.iterdir())) < count:
    time.sleep(0.05)
print("PROMOTED" if promote(client, "m", version, HOLDOUT, F1).promoted else "KEPT")
"""


def test_two_processes_promote_at_once(client, tmp_path, prefect_server):
    """Two retrains finishing together with equally good models beat a worse champion: the
    Prefect server's concurrency limit serialises them, so exactly one moves the alias."""
    # scoring takes 2 s: without the limit both would read the old champion, score it and
    # promote; with it the second one compares against the first one's model
    champion = register_constant(client, "0", delay=2.0)
    registry.promote_if_better(client, "m", champion, HOLDOUT, F1)
    challengers = [register_constant(client, "1", delay=2.0) for _ in range(2)]
    ready = tmp_path / "ready"
    ready.mkdir()
    tests = Path(__file__).parent
    env = prefect_server.env | {
        "PYTHONPATH": f"{tests}:{tests.parent}",
        "MLFLOW_TRACKING_URI": client.tracking_uri,
    }
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                PROMOTE_WHEN_ALL_READY,
                client.tracking_uri,
                version,
                str(ready),
                "2",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in challengers
    ]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        outcomes.append(out.split()[-1])
    assert sorted(outcomes) == ["KEPT", "PROMOTED"]
    assert registry.champion_version(client, "m") in challengers


# 40 held-out rows with known labels, for models that are right on a chosen set of rows
FORTY = pd.DataFrame(
    {
        "text": [f"sentence {i}" for i in range(40)],
        "text_pair": [f"other {i}" for i in range(40)],
        "label": [i % 3 % 2 for i in range(40)],
    }
)
FORTY_HOLDOUT = registry.Holdout(FORTY, LABELS, Scoring(2, positive=1))


class RightOnFirst(mlflow.pyfunc.PythonModel):
    """Gives the true label of FORTY's rows numbered below `right`, the other label after."""

    def __init__(self, right: int):
        self.right = right

    def predict(self, context, model_input, params=None):
        numbers = model_input["text"].str.split().str[-1].astype(int)
        truth = numbers % 3 % 2
        labels = truth.where(numbers < self.right, 1 - truth)
        return pd.DataFrame({"label": labels.astype(str), "score": 0.9})


def champion_and_challenger(client, champion_right: int, challenger_right: int, policy):
    champion = register_model(client, RightOnFirst(champion_right))[0]
    registry.promote_if_better(client, "m", champion, FORTY_HOLDOUT, policy)
    challenger = register_model(client, RightOnFirst(challenger_right))[0]
    return champion, registry.promote_if_better(client, "m", challenger, FORTY_HOLDOUT, policy)


def test_one_row_better_of_40_is_not_promoted_and_the_record_says_why(client):
    champion, decision = champion_and_challenger(client, 30, 31, ACCURACY)
    assert not decision.promoted and registry.champion_version(client, "m") == champion
    # by hand: only row 30 differs, so each resample's difference is (copies of row 30) / 40.
    # A resample misses row 30 with probability (39/40)^40 = 0.36 > 2.5%: the lower end is 0;
    # copies ~ Binomial(40, 1/40), whose 97.5% quantile is 3 (P(<=2) 0.94, P(<=3) 0.98)
    assert decision.difference == pytest.approx(1 / 40)
    assert (decision.ci_low, decision.ci_high) == pytest.approx((0.0, 3 / 40))
    assert decision.rows == 40 and decision.disagreements == 1
    assert decision.mcnemar_p == pytest.approx(1.0)  # 1 discordant row: two-sided p = 1
    assert (
        decision.reason == "not promoted: +2.50 points, 95% CI [+0.00, +7.50] includes the margin 0"
    )
    description = client.get_model_version("m", decision.challenger_version).description
    assert decision.reason[1:] in description and "McNemar p = 1" in description
    assert "on 1 rows only one of them gets right" in description


def test_a_clearly_better_challenger_is_promoted(client):
    champion, decision = champion_and_challenger(client, 20, 38, ACCURACY)
    assert decision.promoted and registry.champion_version(client, "m") != champion
    assert decision.challenger_score == 38 / 40 and decision.champion_score == 20 / 40
    assert decision.difference == pytest.approx(18 / 40) and decision.disagreements == 18
    # 18 discordant rows, all for the challenger: two-sided p = 2 * 0.5^18
    assert decision.mcnemar_p == pytest.approx(2 * 0.5**18)
    assert decision.ci_low > 0.25 and decision.reason.startswith("promoted: +45.00 points")
    assert decision.as_tags()["finetrack.promotion.promoted"] == "True"


def test_point_difference_decision_is_available_and_named(client):
    policy = registry.PromotionPolicy("accuracy", test="none")
    _, decision = champion_and_challenger(client, 30, 31, policy)
    assert decision.promoted and decision.test == "none"
    assert decision.reason == (
        "promoted on the point difference alone (promotion test none): +2.50 points, above "
        "the margin 0"
    )
    assert "# Retrain: promoted" in decision.markdown()
    assert "- decision: promoted on the point difference alone" in decision.markdown()
