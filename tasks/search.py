"""The Optuna study of a search: opened (created or resumed) with its storage, seeded sampler
and pruner, refused when it would not compare with what it holds, and its best trials.

Around it: the storage (tasks.study_storage), the space (tasks.search_space), the pruner and
its Trainer callback (tasks.pruning), a trial's life with its retries (tasks.trial_lifecycle)
and the study's MLflow record and plots (tasks.study_record).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tasks import pruning
from tasks.config import ConfigError, SearchConfig
from tasks.study_storage import make_storage
from tasks.trial_lifecycle import StudyNote


def make_sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    """Seeded sampler, so a study with the same settings proposes the same trials."""
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.train.seed)
    return optuna.samplers.TPESampler(seed=config.train.seed, n_startup_trials=4)


def open_study(
    config: SearchConfig,
    on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    force: bool = False,
) -> optuna.Study:
    """Create or resume the study; a resumed study must have the same search space."""
    study = optuna.create_study(
        study_name=config.study_name,
        storage=make_storage(config, on_stale_trial),
        sampler=make_sampler(config),
        pruner=pruning.make_pruner(config),
        direction="maximize",  # both objectives (accuracy, F1) grow with quality
        load_if_exists=True,
    )
    space = json.dumps(config.space(), sort_keys=True)
    stored = study.user_attrs.get(StudyNote.SPACE)
    if stored is None or force:
        study.set_user_attr(StudyNote.SPACE.value, space)
    elif stored != space:
        raise ConfigError(
            f"study {config.study_name!r} exists with another search space ({stored}); "
            "use another study name, or --force to continue it with the new space"
        )
    objective = f"eval_{config.train.objective_metric}"
    kept = study.user_attrs.get(StudyNote.OBJECTIVE, "eval_f1" if study.trials else None)
    if kept not in (None, objective) and not force:
        raise ConfigError(
            f"study {config.study_name!r} optimises {kept}, not {objective}: its trial values "
            "would not compare; use another study name (or --force)"
        )
    study.set_user_attr(StudyNote.OBJECTIVE.value, objective)
    kept = study.user_attrs.get(StudyNote.REPORTS, 1 if study.trials else None)  # older: per epoch
    if kept not in (None, config.reports_per_epoch) and not force:
        raise ConfigError(
            f"study {config.study_name!r} reports {kept} time(s) per epoch, not "
            f"{config.reports_per_epoch}: its pruner would compare different points of "
            f"training; use --reports-per-epoch {kept}, another study name (or --force)"
        )
    study.set_user_attr(StudyNote.REPORTS.value, config.reports_per_epoch)
    return study


def top_configurations(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The K best completed trials, best first."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(completed, key=lambda t: t.value, reverse=True)[:k]
