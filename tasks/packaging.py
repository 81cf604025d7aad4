"""A fine-tuned model packaged for serving: an MLflow pyfunc model of
`tasks/serving/classifier.py` with its weights (or ONNX graph), signature and card.

Everything is written to the run named by its id (never MLflow's per-thread active run), and
what the model records of the run (its experiment, its params) is handed in by the caller
that logged them, not read back from the store.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import LoggedModelOutput
from mlflow.tracking import MlflowClient

SERVING_CODE = Path(__file__).parent / "serving" / "classifier.py"
CLASSIFIER_REQUIREMENTS = ("torch", "transformers", "mlflow")


@dataclass(frozen=True)
class ModelPackage:
    """What a logged model is made of: the trained model and its tokenizer, an input example
    (the signature's columns), its card (`README.md`), the training `max_length` and the
    calibration temperature."""

    model: object
    tokenizer: object
    example: dict[str, str]
    card: str
    max_length: int
    temperature: float = 1.0  # the logits are divided by it before the softmax


@dataclass(frozen=True)
class Destination:
    """The run a model is logged to: its id, its experiment and the params it logged (the
    LoggedModel carries them too)."""

    run_id: str
    experiment_id: str
    params: dict[str, str] = field(default_factory=dict)


def log_classifier_model(client: MlflowClient, run: Destination, package: ModelPackage):
    """Log the fine-tuned model as a pyfunc classifier (`tasks/serving/classifier.py`, shipped
    with the model as its code) with `card` as its `README.md`.

    The pyfunc predicts in length-sorted batches, in bf16 where the hardware computes it
    natively: several times the rows/s of the transformers flavour's pipeline, which
    predicts row by row in fp32.
    """
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "weights"
        package.model.float().save_pretrained(weights, safe_serialization=True)
        package.tokenizer.save_pretrained(weights)
        return log_pyfunc_model(
            client, run, "model", {"model": str(weights)}, package, CLASSIFIER_REQUIREMENTS
        )


def log_pyfunc_model(
    client: MlflowClient,
    run: Destination,
    name: str,
    artifacts: dict[str, str],
    package: ModelPackage,
    requirements: tuple[str, ...],
):
    """One pyfunc model of `SERVING_CODE` with `artifacts`, tied to the run; its card is
    written when the package has one (else later, by `write_card`).

    The LoggedModel is created in the run's own experiment first: left to itself, MLflow's
    fluent `log_model(run_id=...)` files it under the Default experiment (id 0) whenever no
    experiment is active, which a per-run-id logger never sets. The signature is given, so
    MLflow does not run the model to infer it.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    logged = mlflow.initialize_logged_model(
        name=name,
        source_run_id=run.run_id,
        params=run.params,
        experiment_id=run.experiment_id,
    )
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", column) for column in package.example]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
        params=ParamSchema(
            [ParamSpec("precision", "string", "auto"), ParamSpec("batch_size", "long", 64)]
        ),
    )
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(SERVING_CODE),
        artifacts=artifacts,
        model_config={"max_length": package.max_length, "temperature": package.temperature},
        signature=signature,
        input_example=pd.DataFrame([package.example]),
        pip_requirements=[f"{package}=={version(package)}" for package in requirements],
        model_id=logged.model_id,
    )
    # pyfunc's log_model takes no run id (it would use the thread's active run): the
    # model is tied to its run here, as the Models column and `run.outputs` show
    client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])
    if package.card:
        write_card(client, logged.model_id, package.card)
    return info


def write_card(client: MlflowClient, model_id: str, card: str) -> None:
    """The logged model's `README.md`."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "README.md").write_text(card, encoding="utf-8")
        client.log_model_artifacts(model_id, folder)
