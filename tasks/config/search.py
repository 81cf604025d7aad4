"""Configs of a hyperparameter search and of a retrain: the study's settings around the shared
FineTuneConfig. The search space is the fields declared with `searched(...)`; what is derived
from them lives in tasks.search_space."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks import search_space
from tasks.config.checks import comma_list
from tasks.config.fine_tune import FineTuneConfig
from tasks.search_space import FloatRange, IntRange, searched


class SearchConfig(BaseModel):
    """An Optuna study over FineTuneConfig settings; the space is checked before any trial."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train: FineTuneConfig = Field(
        default_factory=FineTuneConfig, description="Settings shared by all trials."
    )
    study_name: str = Field("finetrack-search", description="Optuna study (resumed if it exists).")
    storage: str | None = Field(
        None, description="Optuna RDB URL; unset: $OPTUNA_STORAGE or sqlite:///optuna.db."
    )
    n_trials: int = Field(8, ge=1, description="Finished trials wanted in the study in total.")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Sampler, seeded by train.seed.")
    pruner: Literal["median", "median-latest", "asha", "hyperband", "none"] = Field(
        "median-latest",
        description="Pruner of trials that fall behind (see reports_per_epoch): median-latest "
        "stops a trial whose latest report is below the median of the completed trials there.",
    )
    reports_per_epoch: int = Field(
        2,
        ge=1,
        le=10,
        description="Validation scores per epoch a trial reports to the pruner (the last at "
        "the epoch's end): with 2, a trial that falls behind stops after half an epoch.",
    )
    # the search space: one field per searched setting (unset: the setting is not searched)
    learning_rate_range: FloatRange = searched(
        "learning_rate",
        "Learning-rate range; add ',log' for log scale (the default range is).",
        FloatRange(low=1e-5, high=1e-4, log=True),
    )
    num_epochs_range: IntRange = searched("num_epochs", "Epochs range.", IntRange(low=1, high=5))
    batch_size_choices: list[int] | None = searched(
        "batch_size", "Batch sizes to try, e.g. 8,16,32 (unset: train.batch_size)."
    )
    warmup_ratio_range: FloatRange | None = searched("warmup_ratio", "Warm-up share range.")
    weight_decay_range: FloatRange | None = searched("weight_decay", "Weight-decay range.")
    max_grad_norm_range: FloatRange | None = searched("max_grad_norm", "Gradient-norm clip range.")
    heartbeat_interval: int = Field(
        30, ge=1, description="Seconds between trial heartbeats in the storage."
    )
    grace_period: int = Field(
        120, ge=2, description="A RUNNING trial silent this long (crashed worker) is marked FAIL."
    )
    parallelism: int = Field(
        1,
        ge=1,
        description="Worker flow runs (the `worker_deployment`) that run trials at the same "
        "time on the work pool; 1: the trials run inside the search flow run.",
    )
    worker_deployment: str = Field(
        "search-worker/trials", description="Deployment whose flow runs run the trials."
    )
    trial_retries: int = Field(
        2,
        ge=0,
        description="Times a trial whose worker was lost (killed, stopped, silent) is run "
        "again, from its last epoch checkpoint under train.output_dir (shared by all workers).",
    )
    warm_start_study: str | None = Field(
        None,
        description="An earlier study in the same storage: its best trials' hyperparameters "
        "are tried first (with the champion's, see warm_start_champion).",
    )
    warm_start_trials: int = Field(
        2, ge=0, description="How many of warm_start_study's best trials are tried first."
    )
    warm_start_champion: bool = Field(
        False,
        description="Try the registered champion's hyperparameters first "
        "(train.registered_model_name, default 'finetrack').",
    )
    finalize: bool = Field(
        True,
        description="After the study, confirm the best configurations and register the winner "
        "(false for extra workers that only add trials).",
    )
    confirm_top_k: int = Field(
        2, ge=0, description="Retrain the best K configurations over several seeds (0: off)."
    )
    confirm_seeds: int = Field(3, ge=1, description="Seeds per confirmed configuration.")

    _split_choices = field_validator("batch_size_choices", mode="before")(comma_list)

    @field_validator("batch_size_choices")
    @classmethod
    def _positive_choices(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) <= 0):
            raise ValueError("batch sizes must be a non-empty list of positive integers")
        return value

    @model_validator(mode="after")
    def _train_settings_not_searched(self) -> SearchConfig:
        """A training setting that every trial overrides would be silently ignored."""
        owned = search_space.owned_settings(self)
        for name in sorted(owned.keys() & self.train.model_fields_set):
            raise ValueError(
                f"{name} is set by the search (its {owned[name]}); "
                f"give --{owned[name].replace('_', '-')} instead of --{name.replace('_', '-')}"
            )
        return self

    @model_validator(mode="after")
    def _ranges_fit(self) -> SearchConfig:
        """Each range within the bounds of the setting it searches."""
        problem = search_space.out_of_bounds(self)
        if problem:
            raise ValueError(problem)
        return self

    def space(self) -> dict:
        """The search space as plain data (logged, and compared when a study is resumed)."""
        return search_space.logged_space(self)


class RetrainConfig(BaseModel):
    """Train a challenger on current data and promote it only if it beats the champion."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train: FineTuneConfig = Field(
        default_factory=FineTuneConfig, description="Data, model and default hyperparameters."
    )
    registered_model_name: str = Field("finetrack", description="Model Registry name.")
    hyperparameters: Literal["config", "study", "search"] = Field(
        "study",
        description="Where the challenger's hyperparameters come from: the config as given, the "
        "best trial of `study_name` (config when there is none), or a short new search.",
    )
    study_name: str = Field("finetrack-search", description="Study with the best known trial.")
    storage: str | None = Field(None, description="Optuna storage of that study.")
    search_trials: int = Field(4, ge=1, description="Trials of a new search (`search`).")
    evaluation_split: Literal["validation", "test"] = Field(
        "validation", description="Held-out split on which champion and challenger are compared."
    )
    metric: Literal["f1", "accuracy"] | None = Field(
        None, description="Comparison metric (default: the train config's objective_metric)."
    )

    @model_validator(mode="after")
    def _search_owns_its_settings(self) -> RetrainConfig:
        """With `search`, the new study (of the default space) sets these for every trial: a
        value would be lost."""
        owned = search_space.owned_settings(SearchConfig())
        taken = sorted(owned.keys() & self.train.model_fields_set)
        if self.hyperparameters == "search" and taken:
            raise ValueError(
                f"{', '.join(taken)} would be set by the search (hyperparameters=search); "
                "leave them out, or use hyperparameters=config"
            )
        return self
