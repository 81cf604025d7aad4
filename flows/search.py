"""Search flow: an Optuna study over learning rate and epochs (and more), one task per trial.

The recipe: open (or resume) the study, load and tokenize the data once, queue what is
already known (warm start), run trials until the study has `n_trials` finished ones (each a
nested MLflow run, pruned when it falls behind), here or in `parallelism` worker flow runs
on the work pool, record the study, confirm the best configurations over seeds, and register
the winner, which becomes `champion` only if it beats the current one on the same rows.
"""

from __future__ import annotations

import logging
import sys

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.cli import flow_main
from flows.confirmation import confirm_and_pick
from flows.fan_out import check_deployment, run_workers
from flows.promotion import register_and_promote
from flows.trial import finish_study, open_search, study_run_name
from tasks import provenance, search, study_record, study_storage, tracking, warm_start
from tasks import trial_lifecycle as lifecycle
from tasks.config import SearchConfig
from tasks.registry import DEFAULT_MODEL_NAME, PromotionPolicy
from tasks.trial_lifecycle import StudyNote

log = logging.getLogger(__name__)


@flow(name="search", flow_run_name=study_run_name("search"))
def search_flow(config: SearchConfig | None = None, force: bool = False) -> dict:
    """Run (or resume) the study to `n_trials` finished trials, then pick and register."""
    config = config or SearchConfig()
    if config.parallelism > 1:
        check_deployment(config)
    study, dataset, shared = open_search(config, force)
    config, client = shared.config, shared.client  # the objective resolved on the data
    objective = config.train.objective_metric

    resumed = study.user_attrs.get(StudyNote.STUDY_RUN)
    tags = {  # a resumed study run keeps those of its creation
        study_record.STUDY_TAG: config.study_name,
        "finetrack.flow": "search",
        **provenance.tags(config.train.threads),
    }
    with tracking.tracked_run(
        client, config.train.experiment_name, f"study-{config.study_name}", tags,
        resume_run_id=resumed,
    ) as parent_id:  # fmt: skip
        study.set_user_attr(StudyNote.STUDY_RUN.value, parent_id)
        # MLflow refuses to change a param: a resumed study (say with more --n-trials) keeps
        # those of its creation, and its current target is a tag
        client.set_tag(parent_id, "finetrack.n_trials", str(config.n_trials))
        params = {
            "study_name": config.study_name,
            "storage": tracking.redact(study_storage.resolve_storage(config.storage)),
            "n_trials": config.n_trials,
            "sampler": config.sampler,
            "pruner": config.pruner,
            "objective_metric": f"eval_{objective}",  # as studies have always logged it
            "search_space": config.space(),
            "data_fingerprint": dataset.fingerprint,
        }
        if not resumed:  # the settings, data source and library versions, once
            tracking.log_params(client, parent_id, params | shared.record)
        shared.parent_run_id = parent_id
        warm_start.enqueue_known_configurations(config, study, client)
        if config.parallelism > 1 and lifecycle.finished_count(study) < config.n_trials:
            run_workers(config, study)  # then this run finishes what the workers left
        finish_study(study, shared)
        rows = study_record.trial_rows(study)
        create_table_artifact(rows, key="search-trials", description=config.study_name)
        study_record.record_study(client, parent_id, study, rows)
        description = study_record.study_description(study, rows, config.space(), objective)
        winner, decision = None, None
        if not config.finalize:
            log.info("finalize is off: leaving confirmation and registration to another run")
        elif search.top_configurations(study, 1):
            confirmation = confirm_and_pick(config, study, client, parent_id, shared.prepared)
            winner = confirmation.winner
            decision = register_and_promote(
                client,
                winner["model_uri"],
                winner["run_id"],
                config.train.registered_model_name or DEFAULT_MODEL_NAME,
                shared.prepared.holdout(),
                PromotionPolicy.of(config.train),
                confirmation.winner_labels,
                confirmation.winner_export,
            )
            for key, value in decision.as_tags().items():
                client.set_tag(parent_id, key, value)
            description += f"\n\n{confirmation.description}\n\n{decision.describe()}"
        else:
            log.warning("no trial completed: nothing to confirm or register")
        tracking.describe(client, parent_id, description)

    return {
        "study_name": config.study_name,
        "parent_run_id": parent_id,
        "trials": rows,
        "winner": winner,
        "decision": decision,
    }


main = flow_main("search")


if __name__ == "__main__":
    sys.exit(main())
