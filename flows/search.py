"""Search flow: an Optuna study over learning rate and epochs (and more), one task per trial.

Each trial trains with the pipeline's tasks on the cached tokenization, reports validation
F1 after every epoch and is stopped early when the pruner says so. The study is persistent:
re-running with the same study name continues it, several workers can share it. Afterwards
the best configurations are retrained over several seeds, the winner by mean is logged,
registered, and becomes `champion` only if it beats the current one on the same data.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run

from flows.cli import run_command
from flows.fine_tune import fine_tune, load_data, resolve_model, tokenize
from flows.promotion import register_and_promote
from tasks import search, tokenization, tracking
from tasks.config import FineTuneConfig, SearchConfig, config_parser, config_with_train_from_args
from tasks.train import train

STUDY_TAG = "finetrack.study"
TRIAL_TAG = "finetrack.trial_number"
STATE_TAG = "finetrack.trial_state"
DEFAULT_MODEL_NAME = "finetrack"


class SurplusTrial(Exception):
    """A worker asked for a trial after the study already had all it needs."""


@dataclass
class TrialOutcome:
    number: int
    params: dict
    value: float | None
    state: str
    run_id: str
    epochs_trained: int


@task(name="trial", task_run_name="trial-{number}", cache_policy=NONE)
def run_trial(
    number: int,
    trial: optuna.Trial,
    config: SearchConfig,
    client,
    parent_run_id: str,
    model_path: str,
    tokenizer,
    tokenized,
    label_names: list[str],
) -> TrialOutcome:
    """Train one trial's configuration, logging to its own nested MLflow run."""
    params = search.suggest(trial, config)
    output_dir = config.train.output_dir / f"{config.study_name}-trial-{number}"
    trial_config = search.trial_config(config.train, params, output_dir)
    tags = {STUDY_TAG: config.study_name, TRIAL_TAG: str(number)}
    with tracking.tracked_run(
        client, trial_config.experiment_name, f"trial-{number}", tags, parent_run_id
    ) as run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
        tracking.log_params(client, run_id, {**trial_config.params(), "trial_number": number})
        objective = f"eval_{config.train.objective_metric}"
        pruning = search.PruningCallback(trial, config.train.objective_metric)
        try:
            result = train(
                trial_config, model_path, tokenizer, tokenized.datasets, label_names, output_dir,
                callbacks=[tracking.EpochMetricsLogger(client, run_id), pruning],
            )  # fmt: skip
        except BaseException:
            client.set_tag(run_id, STATE_TAG, "FAIL")
            raise
        finally:
            shutil.rmtree(output_dir, ignore_errors=True)  # checkpoints are never kept
        best = max(row[objective] for row in result.history if objective in row)
        state = "PRUNED" if pruning.pruned_at is not None else "COMPLETE"
        client.set_tag(run_id, STATE_TAG, state)
        tracking.log_metrics(
            client,
            run_id,
            {f"best_{objective}": best, "epochs_trained": pruning.epochs_done},
        )
    return TrialOutcome(number, params, best, state, run_id, pruning.epochs_done)


def _close_stale_trial_run(client, experiment_name: str):
    """Optuna calls this for a trial whose worker died: close its MLflow run as FAILED.

    The run is found by its tags, not the trial's user attribute: a worker can die after
    starting the run and before recording its id on the trial.
    """

    def close(study: optuna.Study, trial) -> None:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            return
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`{STUDY_TAG}` = '{study.study_name}' "
                f"and tags.`{TRIAL_TAG}` = '{trial.number}' and attributes.status = 'RUNNING'"
            ),
        )
        for run in runs:
            client.set_tag(run.info.run_id, STATE_TAG, "FAIL")
            client.set_terminated(run.info.run_id, "FAILED")

    return close


def _trial_rows(study: optuna.Study) -> list[dict]:
    return [
        {
            "number": t.number,
            **{f"param_{k}": v for k, v in t.params.items()},
            "value": t.value,
            "state": t.state.name,
            "epochs": len(t.intermediate_values),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
        }
        for t in study.get_trials(deepcopy=False)
    ]


def _flow_run_name() -> str:
    config = flow_run.parameters.get("config") or {}
    if isinstance(config, SearchConfig):
        config = config.model_dump()
    return f"search-{config.get('study_name', 'finetrack-search')}"


@flow(name="search", flow_run_name=_flow_run_name)
def search_flow(config: SearchConfig | None = None, force: bool = False) -> dict:
    """Run (or resume) the study to `n_trials` finished trials, then pick and register."""
    config = config or SearchConfig()
    logger = get_run_logger()
    client = tracking.connect(config.train.tracking_uri)
    study = search.open_study(
        config, _close_stale_trial_run(client, config.train.experiment_name), force=force
    )
    model_path = resolve_model(config.train.model_name_or_path)
    dataset = load_data(config.train)
    tokenizer = tokenization.load_tokenizer(model_path)
    tokenized = tokenize(dataset, tokenizer, config.train.max_length, config.train.cache_dir)

    parent_id = study.user_attrs.get("mlflow_parent_run_id")
    tags = {STUDY_TAG: config.study_name, "finetrack.flow": "search"}
    with tracking.tracked_run(
        client, config.train.experiment_name, f"study-{config.study_name}", tags,
        resume_run_id=parent_id,
    ) as parent_id:  # fmt: skip
        study.set_user_attr("mlflow_parent_run_id", parent_id)
        tracking.log_params(
            client,
            parent_id,
            {
                "study_name": config.study_name,
                "storage": tracking.redact(search.resolve_storage(config.storage)),
                "n_trials": config.n_trials,
                "sampler": config.sampler,
                "pruner": config.pruner,
                "objective_metric": config.train.objective_metric,
                "search_space": config.space(),
                "data_fingerprint": dataset.fingerprint,
            },
        )

        def objective(trial: optuna.Trial) -> float:
            if search.claimed_before(study, trial.number) >= config.n_trials:
                study.stop()
                raise SurplusTrial(f"trial {trial.number}: study already has its trials")
            try:
                outcome = run_trial(
                    trial.number, trial, config, client, parent_id, model_path, tokenizer,
                    tokenized, dataset.label_names,
                )  # fmt: skip
            except TerminationSignal as stop:  # Optuna marks FAIL on KeyboardInterrupt only
                raise KeyboardInterrupt(f"signal {stop.signal}") from stop
            if outcome.state == "PRUNED":
                raise optuna.TrialPruned(f"pruned after epoch {outcome.epochs_trained}")
            return outcome.value

        def stop_when_enough(study: optuna.Study, trial) -> None:
            if search.claimed_before(study, sys.maxsize) >= config.n_trials:
                study.stop()

        remaining = config.n_trials - search.finished_count(study)
        logger.info("study %s: %d trial(s) to run", config.study_name, max(remaining, 0))
        if remaining > 0:
            study.optimize(
                objective,
                n_trials=remaining,
                callbacks=[stop_when_enough],
                catch=(Exception,),
                gc_after_trial=True,
            )
        rows = _trial_rows(study)
        create_table_artifact(rows, key="search-trials", description=config.study_name)
        record_study(client, parent_id, study, rows)
        winner, decision = None, None
        if not config.finalize:
            logger.info("finalize is off: leaving confirmation and registration to another run")
        elif search.top_configurations(study, 1):
            winner = confirm_and_pick(config, study, client, parent_id)
            name = config.train.registered_model_name or DEFAULT_MODEL_NAME
            decision = register_and_promote(
                client,
                winner["model_uri"],
                winner["run_id"],
                name,
                dataset.splits["validation"],
                dataset.label_names,
                metric=config.train.objective_metric,
                margin=config.promotion_margin,
            )
            for key, value in decision.as_tags().items():
                client.set_tag(parent_id, key, value)
        else:
            logger.warning("no trial completed: nothing to confirm or register")

    return {
        "study_name": config.study_name,
        "parent_run_id": parent_id,
        "trials": rows,
        "winner": winner,
        "decision": decision,
    }


def record_study(client, parent_id: str, study: optuna.Study, rows: list[dict]) -> None:
    """Best params and value, effort spent, the trial table and Optuna's plots on the parent."""
    best = search.top_configurations(study, 1)
    if best:
        params = {f"best_{k}": v for k, v in best[0].params.items()}
        tracking.log_params(client, parent_id, {**params, "best_trial": best[0].number})
    metrics = {
        "finished_trials": search.finished_count(study),
        "epochs_trained": sum(row["epochs"] for row in rows),
    }
    tracking.log_metrics(
        client, parent_id, metrics | ({"best_value": best[0].value} if best else {})
    )
    tracking.log_files(client, parent_id, {"trials.json": rows})
    with tempfile.TemporaryDirectory() as folder:
        for path in search.save_plots(study, Path(folder)):
            client.log_artifact(parent_id, str(path), "plots")


def confirm_and_pick(config: SearchConfig, study: optuna.Study, client, parent_id: str) -> dict:
    """Retrain the top configurations with several seeds; the best mean objective wins.

    Best-of-N on a noisy validation set is optimistic, so the choice rests on a mean over
    seeds; the model logged for the winner is its run with the base seed.
    """
    metric = config.train.objective_metric
    candidates = search.top_configurations(study, max(config.confirm_top_k, 1))
    seeds = [config.train.seed + i for i in range(config.confirm_seeds)]
    if config.confirm_top_k == 0:
        seeds = seeds[:1]
    results = []
    for rank, trial in enumerate(candidates):
        runs = []
        for seed in seeds:
            settings = {
                **trial.params,
                "seed": seed,
                "log_model": seed == seeds[0],
                "registered_model_name": None,  # only the confirmed winner is registered
            }
            runs.append(
                fine_tune(
                    config.train.model_copy(
                        update={**settings, "run_name": f"confirm-{rank}-seed{seed}"}
                    ),
                    parent_run_id=parent_id,
                    tags={
                        STUDY_TAG: config.study_name,
                        "finetrack.confirm_of_trial": str(trial.number),
                    },
                )
            )
        scores = [run["metrics"]["validation"][metric] for run in runs]
        tests = [run["metrics"].get("test", {}).get(metric) for run in runs]
        results.append(
            {
                "trial": trial.number,
                "params": trial.params,
                "metric": metric,
                "validation_scores": scores,
                "mean_validation": statistics.fmean(scores),
                "std_validation": statistics.pstdev(scores),
                "mean_test": statistics.fmean(tests) if None not in tests else None,
                "seeds": seeds,
                "run_ids": [run["run_id"] for run in runs],
                "run_id": runs[0]["run_id"],
                "model_uri": runs[0]["model_uri"],
            }
        )
    winner = max(results, key=lambda r: r["mean_validation"])
    tracking.log_files(client, parent_id, {"confirmation.json": results})
    tracking.log_metrics(client, parent_id, confirmed_metrics(winner))
    return winner


def confirmed_metrics(winner: dict) -> dict[str, float]:
    """The winner's mean scores for the study run; a mean test score of 0.0 is a score too,
    only a data set without a labelled test split has none."""
    metric = winner["metric"]
    confirmed = {f"confirmed_validation_{metric}": winner["mean_validation"]}
    if winner["mean_test"] is not None:
        confirmed[f"confirmed_test_{metric}"] = winner["mean_test"]
    return confirmed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: search flags plus every fine-tune flag."""
    parser = config_parser(
        "python -m flows.search",
        "Search hyperparameters with Optuna; every trial is a nested MLflow run.",
        SearchConfig,
        FineTuneConfig,
    )
    parser.add_argument(
        "--force", action="store_true", help="Continue a study whose space changed."
    )
    args = parser.parse_args(argv)
    return run_command(
        lambda: config_with_train_from_args(args, SearchConfig),
        lambda config: search_flow(config, force=args.force),
    )


if __name__ == "__main__":
    sys.exit(main())
