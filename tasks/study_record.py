"""A study's record in MLflow: tags that tie runs to trials, the trial table, the study run's
summary, Optuna's plots, descriptions a person can read, and closing the run of a trial whose
worker died."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from tasks import search, tracking
from tasks.trial_lifecycle import (
    Phase,
    TrialNote,
    epochs_trained,
    finished_count,
    reports_per_epoch,
)

log = logging.getLogger(__name__)

STUDY_TAG = "finetrack.study"
TRIAL_TAG = "finetrack.trial_number"
STATE_TAG = "finetrack.trial_state"


def trial_description(
    number: int, params: dict, state: Phase, objective: str, values: dict[int, float], epochs: float
) -> str:
    """A trial run's description: what it tried, how it ended, its epoch-end scores."""
    tried = ", ".join(f"{name} {value:.3g}" for name, value in params.items())
    ending = f"pruned after {epochs:g} epoch(s)" if state is Phase.PRUNED else state.value.lower()
    if not values:
        return f"Trial {number}: {tried}; {ending}, before its first epoch ended."
    best = max(values, key=values.get)
    return (
        f"Trial {number}: {tried}; {ending}. Best {objective} {values[best]:.4f} "
        f"at epoch {best} of {len(values)} evaluated."
    )


def close_stale_trial_run(client: MlflowClient, experiment_name: str):
    """Optuna calls the returned function for a trial whose worker died: close its MLflow
    run as FAILED. The run is found by its tags as well as by the trial's user attributes: a
    worker can die after starting the run and before recording its id on the trial."""

    def close(study: optuna.Study, trial: FrozenTrial) -> None:
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
        found = {run.info.run_id for run in runs}
        # a retry reopens its chain's run before it tags it with its own number
        for key in (TrialNote.MLFLOW_RUN, TrialNote.CHAIN_RUN):
            run_id = trial.user_attrs.get(key)
            if run_id and client.get_run(run_id).info.status == "RUNNING":
                found.add(run_id)
        for run_id in found:
            client.set_tag(run_id, STATE_TAG, Phase.FAILED.value)
            client.set_terminated(run_id, "FAILED")

    return close


def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial: params, value, state, epochs, MLflow run id."""
    per_epoch = reports_per_epoch(study)
    return [
        {
            "number": t.number,
            **{f"param_{k}": v for k, v in t.params.items()},
            "value": t.value,
            "state": t.state.name,
            "epochs": epochs_trained(t, per_epoch),
            "mlflow_run_id": t.user_attrs.get(TrialNote.MLFLOW_RUN, ""),
        }
        for t in study.get_trials(deepcopy=False)
    ]


def study_description(study: optuna.Study, rows: list[dict], space: dict, objective: str) -> str:
    """The study run's description: space, best trial, effort."""
    states = [TrialState[row["state"]] for row in rows]
    best = search.top_configurations(study, 1)
    lines = [
        f"Study `{study.study_name}`: maximise validation {objective} over {space}.",
        "",
        f"{len(rows)} trial(s): {states.count(TrialState.COMPLETE)} complete, "
        f"{states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed; "
        f"{sum(row['epochs'] for row in rows)} epochs trained.",
    ]
    if best:
        params = ", ".join(f"{k} {v:.3g}" for k, v in best[0].params.items())
        lines += ["", f"Best: trial {best[0].number} ({params}), {objective} {best[0].value:.4f}."]
    return "\n".join(lines)


def record_study(client: MlflowClient, parent_id: str, study: optuna.Study, rows: list[dict]):
    """Best params and value, effort spent, the trial table and Optuna's plots on the parent."""
    best = search.top_configurations(study, 1)
    if best:
        params = {f"best_{k}": v for k, v in best[0].params.items()}
        tracking.log_params(client, parent_id, {**params, "best_trial": best[0].number})
    metrics = {
        "finished_trials": finished_count(study),
        "epochs_trained": sum(row["epochs"] for row in rows),
    }
    tracking.log_metrics(
        client, parent_id, metrics | ({"best_value": best[0].value} if best else {})
    )
    tracking.log_files(client, parent_id, {"trials.json": rows})
    with tempfile.TemporaryDirectory() as folder:
        for path in save_plots(study, Path(folder)):
            client.log_artifact(parent_id, str(path), "plots")


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's history, importance, learning-curve and parallel-coordinate plots as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    makers = {
        "optimization_history": plots.plot_optimization_history,
        "intermediate_values": plots.plot_intermediate_values,
        "parallel_coordinate": plots.plot_parallel_coordinate,
    }
    if completed >= 2:
        makers["param_importances"] = plots.plot_param_importances
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, make in makers.items():
        try:
            axes = make(study)
        except (ValueError, RuntimeError) as error:  # e.g. too few trials for a plot
            log.warning("plot %s skipped: %s", name, error)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        saved.append(path)
    return saved
