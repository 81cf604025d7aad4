"""Confirmation of a search's best configurations: each is retrained over several seeds as
nested fine-tune runs, and the best mean validation objective wins.

Best-of-N on a noisy validation set is optimistic, so the choice rests on a mean over
seeds; the model logged for the winner is its run with the base seed.
"""

from __future__ import annotations

import statistics

import optuna

from flows.fine_tune import fine_tune
from tasks import search, tracking
from tasks.config import SearchConfig
from tasks.study_record import STUDY_TAG


def confirm_and_pick(
    config: SearchConfig, study: optuna.Study, client, parent_id: str
) -> tuple[dict, str]:
    """The winner's row of `confirmation.json` (its base-seed run holds the logged model)
    and a description of the whole confirmation for the study run."""
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
                    config.train.with_settings(**settings, run_name=f"confirm-{rank}-seed{seed}"),
                    parent_run_id=parent_id,
                    tags={
                        STUDY_TAG: config.study_name,
                        "finetrack.confirm_of_trial": str(trial.number),
                    },
                )
            )
        scores = [run.metrics["validation"][metric] for run in runs]
        tests = [run.metrics.get("test", {}).get(metric) for run in runs]
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
                "run_ids": [run.run_id for run in runs],
                "run_id": runs[0].run_id,
                "model_uri": runs[0].model_uri,
            }
        )
    winner = max(results, key=lambda r: r["mean_validation"])
    tracking.log_files(client, parent_id, {"confirmation.json": results})
    tracking.log_metrics(client, parent_id, confirmed_metrics(winner))
    return winner, confirmation_description(results, winner)


def confirmed_metrics(winner: dict) -> dict[str, float]:
    """The winner's mean scores for the study run; a mean test score of 0.0 is a score too,
    only a data set without a labelled test split has none."""
    metric = winner["metric"]
    confirmed = {f"confirmed_validation_{metric}": winner["mean_validation"]}
    if winner["mean_test"] is not None:
        confirmed[f"confirmed_test_{metric}"] = winner["mean_test"]
    return confirmed


def confirmation_description(results: list[dict], winner: dict) -> str:
    """Mean ± sd over seeds of each confirmed configuration, for the study run."""
    lines = [f"Confirmation over seeds {winner['seeds']} (validation {winner['metric']}):", ""]
    for row in results:
        mark = " (winner)" if row is winner else ""
        lines.append(
            f"- trial {row['trial']}: {row['mean_validation']:.4f} ± "
            f"{row['std_validation']:.4f}{mark}"
        )
    return "\n".join(lines)
