"""Confirmation of a search's best configurations: each is retrained over the same seeds as
nested fine-tune runs, and compared with the best mean seed by seed.

Best-of-N on a noisy validation set is optimistic, so the choice rests on seeds, paired: the
configuration with the best mean validation objective leads, and every other one is compared
with it by the mean of the per-seed differences and its 95% t interval. Among the leader and
the configurations it cannot be told apart from, the cheaper one wins: fewer epochs, then
more frozen layers (fewer trainable weights). The model logged for the winner is its run with
the base seed.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import numpy as np
import optuna

from flows.fine_tune import fine_tune
from tasks import search, tracking
from tasks.config import SearchConfig
from tasks.onnx_export import OnnxExport
from tasks.prepared import Prepared
from tasks.reporting import FineTuneResult
from tasks.study_record import STUDY_TAG
from tasks.uncertainty import seed_paired_difference


@dataclass(frozen=True)
class Confirmation:
    winner: dict  # its row of `confirmation.json`; its base-seed run holds the logged model
    description: str  # of the whole confirmation, for the study run
    # the winner's logged model's labels on the validation rows, where its run scored them
    # (an ONNX export's parity): its promotion need not score them again
    winner_labels: np.ndarray | None
    winner_export: OnnxExport | None  # the winner's checked ONNX export, where it has one


def confirm_and_pick(
    config: SearchConfig,
    study: optuna.Study,
    client,
    parent_id: str,
    prepared: Prepared | None = None,
) -> Confirmation:
    """Retrain the best configurations over the seeds, pick the winner and record the
    comparison on the study run. Every run trains from `prepared`, the search's inputs (else
    each prepares its own)."""
    metric = config.train.objective_metric
    candidates = search.top_configurations(study, max(config.confirm_top_k, 1))
    seeds = [config.train.seed + i for i in range(config.confirm_seeds)]
    if config.confirm_top_k == 0:
        seeds = seeds[:1]
    results: list[dict] = []
    base_runs: dict[str, FineTuneResult] = {}  # each candidate's base-seed run, by run id
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
                    prepared=prepared,
                    tags={
                        STUDY_TAG: config.study_name,
                        "finetrack.confirm_of_trial": str(trial.number),
                    },
                )
            )
        base_runs[runs[0].run_id] = runs[0]
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
                "num_epochs": runs[0].recipe["num_epochs"],
                "frozen_layers": runs[0].recipe.get("frozen_layers", 0),
            }
        )
    winner = pick_winner(results)
    tracking.log_files(client, parent_id, {"confirmation.json": results})
    tracking.log_metrics(client, parent_id, confirmed_metrics(winner))
    return Confirmation(
        winner,
        confirmation_description(results, winner),
        base_runs[winner["run_id"]].holdout_labels,
        base_runs[winner["run_id"]].onnx,
    )


def pick_winner(results: list[dict]) -> dict:
    """The cheapest of the leader and the configurations not told apart from it; each row
    gets its paired comparison with the leader and the winner its reason."""
    leader = max(results, key=lambda row: row["mean_validation"])
    tied = [leader]
    for row in results:
        if row is leader:
            continue
        paired = seed_paired_difference(row["validation_scores"], leader["validation_scores"])
        row["vs_leader"] = asdict(paired) | {"text": paired.text()}
        if not paired.distinguishable:
            tied.append(row)
    winner = min(tied, key=lambda row: (row["num_epochs"], -row["frozen_layers"]))
    if winner is leader:
        others = len(tied) - 1
        winner["reason"] = "best mean" + (
            f"; as cheap as or cheaper than the {others} configuration(s) it cannot be told apart "
            "from"
            if others
            else ", told apart from every other configuration"
        )
    else:
        winner["reason"] = (
            f"cannot be told apart from the best mean (trial {leader['trial']}: "
            f"{winner['vs_leader']['text']}) and cheaper: {winner['num_epochs']} epoch(s), "
            f"{winner['frozen_layers']} frozen layer(s), against {leader['num_epochs']} and "
            f"{leader['frozen_layers']}"
        )
    return winner


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
        against = (
            f"; against the best mean {row['vs_leader']['text']}" if "vs_leader" in row else ""
        )
        mark = " (winner)" if row is winner else ""
        lines.append(
            f"- trial {row['trial']}: {row['mean_validation']:.4f} ± "
            f"{row['std_validation']:.4f}{against}{mark}"
        )
    return "\n".join([*lines, "", f"Winner: trial {winner['trial']}, {winner['reason']}."])
