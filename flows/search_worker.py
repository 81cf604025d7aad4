"""Search worker flow: runs trials of a study that the search flow opened.

The search flow with `parallelism` N submits N flow runs of this flow's deployment
(`search-worker/trials` in deployment.yaml) to the work pool; each runs trials of the same
study (its storage hands out the trials, so none runs twice) as nested runs of the
same MLflow study run, until the study has its `n_trials`. Several machines: point their
workers at the same Prefect server, and give the study a storage, an MLflow tracking URI
and a train.output_dir (the trials' checkpoints) that every machine reaches.
"""

from __future__ import annotations

import sys

import optuna
from prefect import flow

from flows.cli import flow_main
from flows.trial import open_search, run_trials, study_run_name
from tasks import study_storage
from tasks import trial_lifecycle as lifecycle
from tasks.config import ConfigError, SearchConfig


@flow(name="search-worker", flow_run_name=study_run_name("search-worker"))
def search_worker(config: SearchConfig) -> dict:
    """Run trials of `config.study_name` until the study has its trials."""
    storage = study_storage.resolve_storage(config.storage)
    try:  # look before opening: opening creates a missing study
        opened = optuna.load_study(study_name=config.study_name, storage=storage)
    except KeyError:
        opened = None
    if opened is None or lifecycle.StudyNote.STUDY_RUN not in opened.user_attrs:
        raise ConfigError(
            f"study {config.study_name!r} has no study run: start it with the search flow "
            "(its --parallelism submits the workers)"
        )
    study, _, shared = open_search(config)
    shared.parent_run_id = study.user_attrs[lifecycle.StudyNote.STUDY_RUN]
    run_trials(study, shared)
    return {"study_name": config.study_name, "finished": lifecycle.finished_count(study)}


main = flow_main("search-worker")


if __name__ == "__main__":
    sys.exit(main())
