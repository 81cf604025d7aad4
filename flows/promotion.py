"""Champion promotion under a Prefect global concurrency limit of one per model name.

Two retrains (or searches) finishing together would both read the same champion and could
both move the alias, the later one possibly to the worse model. Holding a slot of the limit
`promote-<model name>` while scoring and moving the alias makes the checks run one after the
other, so the second one compares against the first one's result. The limit lives in the
Prefect server (the embedded one shares its database between local processes).
"""

from __future__ import annotations

import contextlib

import numpy as np
from mlflow.tracking import MlflowClient
from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from tasks import registry, tracking
from tasks.onnx_export import OnnxExport


def ensure_limit(name: str) -> None:
    """Create the one-slot limit if it does not exist yet."""
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def promote(
    client: MlflowClient,
    model_name: str,
    version: str,
    holdout: registry.Holdout,
    policy: registry.PromotionPolicy,
    challenger: np.ndarray | None = None,
    details: str | None = None,
) -> registry.Decision:
    """`registry.promote_if_better`, one process at a time per registered model."""
    limit = f"promote-{model_name}"
    ensure_limit(limit)
    with concurrency(limit, occupy=1, strict=True, timeout_seconds=1800):
        return registry.promote_if_better(
            client, model_name, version, holdout, policy, challenger, details
        )


def register_and_promote(
    client: MlflowClient,
    model_uri: str,
    run_id: str,
    model_name: str,
    holdout: registry.Holdout,
    policy: registry.PromotionPolicy,
    challenger: np.ndarray | None = None,
    export: OnnxExport | None = None,
) -> registry.Decision:
    """Register the run's model, promote it if better, and record the decision on the run;
    `challenger`: the model's labels on the holdout rows, where they are known already;
    `export`: the model's checked ONNX export, whose parity and speed-up the version's
    description then gives too."""
    version = registry.register(client, model_uri, model_name, run_id)
    details = export.describe() if export is not None else None
    decision = promote(client, model_name, version, holdout, policy, challenger, details)
    for key, value in decision.as_tags().items():
        client.set_tag(run_id, key, value)
    tracking.log_metrics(client, run_id, decision.metrics())
    return decision
