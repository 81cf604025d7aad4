"""Retrain flow: train a challenger on today's data, promote it only if it is better.

The challenger's hyperparameters come from the config, from the best trial of a study, or
from a short new search. Champion and challenger are scored on the same held-out split; the
alias `champion` moves only when the paired bootstrap interval of the gain lies above the
margin (the first model always becomes champion). The decision, its evidence and both
versions go to MLflow and to a Prefect artifact.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import optuna
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.cli import flow_main
from flows.fine_tune import fine_tune
from flows.promotion import register_and_promote
from flows.search import search_flow
from flows.steps import prepare
from tasks import registry, search, study_storage, tracking
from tasks.config import (
    RetrainConfig,
    SearchConfig,
)


def best_known_params(config: RetrainConfig) -> dict:
    """Best trial's params of the configured study; empty when there is none yet."""
    try:
        study = optuna.load_study(
            study_name=config.study_name, storage=study_storage.resolve_storage(config.storage)
        )
        return dict(search.top_configurations(study, 1)[0].params)
    except (KeyError, IndexError):
        return {}


def challenger_params(config: RetrainConfig) -> dict:
    """The hyperparameters the challenger trains with."""
    if config.hyperparameters == "study":
        return best_known_params(config)
    if config.hyperparameters == "search":
        study = SearchConfig(
            train=config.train.with_settings(registered_model_name=config.registered_model_name),
            # a study per retrain: today's trials, started from what is known
            study_name=f"{config.study_name}-retrain-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}",
            storage=config.storage,
            n_trials=config.search_trials,
            finalize=False,
            # the champion's recipe and the study's best trials are tried first
            warm_start_champion=True,
            warm_start_study=config.study_name,
        )
        search_flow(study)
        return best_known_params(config.model_copy(update={"study_name": study.study_name}))
    return {}


@flow(name="retrain")
def retrain(config: RetrainConfig | None = None) -> dict:
    """Train, register, compare with the champion on the same rows, promote if better."""
    config = config or RetrainConfig()
    logger = get_run_logger()
    params = challenger_params(config)
    logger.info("challenger hyperparameters: %s", params or "from the config")
    train_config = config.train.with_settings(**params, log_model=True, registered_model_name=None)
    prepared = prepare(train_config)  # once, for training and for scoring
    challenger = fine_tune(train_config, tags={"finetrack.flow": "retrain"}, prepared=prepared)
    decision = register_and_promote(
        tracking.connect(config.train.tracking_uri),
        challenger.model_uri,
        challenger.run_id,
        config.registered_model_name,
        prepared.holdout(config.evaluation_split),
        registry.PromotionPolicy.of(prepared.config, metric=config.metric),
        export=challenger.onnx,
    )
    logger.info("%s", decision.describe())
    create_markdown_artifact(decision.markdown(), key="retrain-decision")
    return {"run_id": challenger.run_id, "params": params, "decision": decision}


main = flow_main("retrain")


if __name__ == "__main__":
    sys.exit(main())
