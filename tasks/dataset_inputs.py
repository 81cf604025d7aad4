"""The data set a run used, as MLflow dataset inputs: each split's name, digest, schema and
source, shown on the run's page and searchable across runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from tasks.data import LoadedData


def log_dataset_inputs(client: MlflowClient, run_id: str, data: LoadedData) -> None:
    """Each split as an MLflow dataset input (name, digest, schema, source) of the run."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    contexts = {"train": "training", "validation": "validation", "test": "testing"}
    inputs = []
    for split, frame in data.splits.items():
        with warnings.catch_warnings():
            # MLflow hints that integer columns cannot hold missing values: `label` never
            # does (tasks.data refuses empty labels), so the hint does not apply.
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
            dataset = mlflow.data.from_pandas(
                frame,
                source=_dataset_source(data.files.get(split, data.source)),
                name=f"{Path(data.source).name or data.source}-{split}",
                targets="label",
                digest=data.fingerprint[:16],
            )
            entity = dataset._to_mlflow_entity()  # the schema is inferred here
        tag = InputTag(key=MLFLOW_DATASET_CONTEXT, value=contexts[split])
        inputs.append(DatasetInput(dataset=entity, tags=[tag]))
    client.log_inputs(run_id, datasets=inputs)


def _dataset_source(location: str):
    """A local file as MLflow's local-artifact dataset source. Given the bare path, MLflow
    finds two registered sources that both match and warns that the path is ambiguous."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    if "://" in location:  # a Hub data set: MLflow resolves its URL unambiguously
        return location
    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    return local(location)
