"""Warm start of a study: what is already known is tried before anything new.

The registered champion's hyperparameters and the best trials of a named earlier study are
queued as the first trials (Optuna's `enqueue_trial`), so a short search never ends worse
than the current recipe for lack of trying it. Queued once per study: a resumed study does
not queue them again.
"""

from __future__ import annotations

import logging

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks import search, study_storage
from tasks.config import SearchConfig
from tasks.registry import CHAMPION, DEFAULT_MODEL_NAME
from tasks.search_space import fit_to_space
from tasks.trial_lifecycle import StudyNote, TrialNote

log = logging.getLogger(__name__)


def champion_params(client: MlflowClient, name: str) -> dict[str, str] | None:
    """The logged params of the run behind the champion version, or None without one."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return client.get_run(version.run_id).data.params


def best_trials_params(config: SearchConfig, study_name: str, k: int) -> list[dict]:
    """Params of the K best completed trials of another study in the same storage."""
    try:
        earlier = optuna.load_study(
            study_name=study_name, storage=study_storage.resolve_storage(config.storage)
        )
    except KeyError:
        log.warning("warm start: no study %r in the storage", study_name)
        return []
    return [dict(trial.params) for trial in search.top_configurations(earlier, k)]


def enqueue_known_configurations(
    config: SearchConfig, study: optuna.Study, client: MlflowClient
) -> list[dict]:
    """Queue the champion's and the earlier study's best configurations (first time only)."""
    if StudyNote.WARM_START in study.user_attrs:
        return []
    candidates: list[tuple[str, dict]] = []
    if config.warm_start_champion:
        name = config.train.registered_model_name or DEFAULT_MODEL_NAME
        found = champion_params(client, name)
        if found is not None:
            candidates.append((f"champion of {name}", found))
    if config.warm_start_study:
        for rank, params in enumerate(
            best_trials_params(config, config.warm_start_study, config.warm_start_trials)
        ):
            candidates.append((f"{config.warm_start_study} best #{rank + 1}", params))
    queued: list[dict] = []
    for source, params in candidates:
        if len(queued) == config.n_trials:  # more would stay queued after the study ends
            log.warning("warm start: %s not queued, the study has only %d trials", source,
                        config.n_trials)  # fmt: skip
            continue
        fitted = fit_to_space(config, params)
        if fitted is None:
            log.warning("warm start: %s (%s) lies outside the search space", source, params)
        elif fitted not in [q["params"] for q in queued]:
            study.enqueue_trial(fitted, user_attrs={TrialNote.WARM_START.value: source})
            queued.append({"source": source, "params": fitted})
            log.info("warm start: %s queued first: %s", source, fitted)
    study.set_user_attr(StudyNote.WARM_START.value, queued)
    return queued
