"""The search space, defined once: the SearchConfig fields declared with `searched(...)`.

Each such field holds a range (`FloatRange`, `IntRange`) or a list of choices for one
FineTuneConfig setting, which is also the Optuna parameter's name; unset, the setting is not
searched. Everything else is derived from those declarations, in their order:

- the Optuna distributions (`distributions`) and a trial's draw from them (`suggest`);
- the settings a search owns (`owned_settings`), refused among the shared training settings
  of a search, and of a retrain by search (the default space);
- the space logged and compared when a study is resumed (`logged_space`);
- each range's check against the bounds of the setting it searches (`out_of_bounds`);
- the warm start's fit of known params into the space (`fit_to_space`).

Searching one more FineTuneConfig setting takes one `searched(...)` field in SearchConfig
(tasks/config/search.py); nothing here changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import optuna

    from tasks.config import FineTuneConfig, SearchConfig

SEARCHES = "searches"  # the key, in a field's json_schema_extra, of the setting it searches


class FloatRange(BaseModel):
    """A float search range; written `low,high` or `low,high,log` on the command line."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            low, high, *scale = (part.strip() for part in value.split(","))
            return {"low": low, "high": high, "log": scale == ["log"]}
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low {self.low} must be below {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


class IntRange(FloatRange):
    """An integer search range (both ends included)."""

    low: int
    high: int

    @model_validator(mode="after")
    def _not_empty(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"inverted range: low {self.low} is above high {self.high}")
        return self


Bounds = FloatRange | IntRange | list  # a range, or the choices


def searched(setting: str, description: str, default: Any = None) -> Any:
    """A SearchConfig field that searches the FineTuneConfig setting `setting`."""
    return Field(default, description=description, json_schema_extra={SEARCHES: setting})


def dimensions(model: type[BaseModel]) -> dict[str, str]:
    """Setting searched -> the field that holds its range, in declaration order (the order in
    which a trial draws them: the same order keeps a seeded sampler's proposals)."""
    found = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and SEARCHES in extra:
            found[str(extra[SEARCHES])] = name
    return found


def searched_bounds(config: SearchConfig) -> dict[str, Bounds]:
    """The settings this config searches, each with its range or choices."""
    found = {}
    for setting, field in dimensions(type(config)).items():
        bounds = getattr(config, field)
        if bounds:
            found[setting] = bounds
    return found


def owned_settings(config: SearchConfig) -> dict[str, str]:
    """Setting -> field, for every setting this search sets in each trial."""
    fields = dimensions(type(config))
    return {setting: fields[setting] for setting in searched_bounds(config)}


def logged_space(config: SearchConfig) -> dict[str, Any]:
    """The search space as plain data, by field (logged, and compared on resume)."""
    fields = owned_settings(config).values()
    return config.model_dump(include=set(fields))


def out_of_bounds(config: SearchConfig) -> str | None:
    """The first range reaching past what its setting accepts (FineTuneConfig's bounds)."""
    for setting, bounds in searched_bounds(config).items():
        field = dimensions(type(config))[setting]
        ends = (min(bounds), max(bounds)) if isinstance(bounds, list) else None
        low, high = ends or (bounds.low, bounds.high)
        for rule in type(config.train).model_fields[setting].metadata:
            if isinstance(rule, Ge) and low < rule.ge:
                return f"{field} must " + (
                    "not be negative" if rule.ge == 0 else f"start at {rule.ge:g} or more"
                )
            if isinstance(rule, Gt) and low <= rule.gt:
                return f"{field} must start above {rule.gt:g}"
            if isinstance(rule, Lt) and high >= rule.lt:
                return f"{field} must stay below {rule.lt:g}"
            if isinstance(rule, Le) and high > rule.le:
                return f"{field} must not exceed {rule.le:g}"
    return None


def distributions(config: SearchConfig) -> dict[str, optuna.distributions.BaseDistribution]:
    """The study's distributions by parameter name."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    found: dict[str, optuna.distributions.BaseDistribution] = {}
    for setting, bounds in searched_bounds(config).items():
        if isinstance(bounds, IntRange):
            found[setting] = IntDistribution(bounds.low, bounds.high, log=bounds.log)
        elif isinstance(bounds, FloatRange):
            found[setting] = FloatDistribution(bounds.low, bounds.high, log=bounds.log)
        else:
            found[setting] = CategoricalDistribution(bounds)
    return found


def suggest(trial: optuna.Trial, config: SearchConfig) -> dict[str, float | int]:
    """The trial's hyperparameters, drawn from the configured space."""
    from optuna.distributions import FloatDistribution, IntDistribution

    params: dict[str, float | int] = {}
    for name, found in distributions(config).items():
        if isinstance(found, IntDistribution):
            params[name] = trial.suggest_int(name, found.low, found.high, log=found.log)
        elif isinstance(found, FloatDistribution):
            params[name] = trial.suggest_float(name, found.low, found.high, log=found.log)
        else:
            params[name] = trial.suggest_categorical(name, found.choices)
    return params


def trial_config(base: FineTuneConfig, params: dict, output_dir: Path) -> FineTuneConfig:
    """The shared training settings with one trial's hyperparameters put in (validated)."""
    return base.with_settings(**params, output_dir=output_dir, log_model=False)


def fit_to_space(config: SearchConfig, params: dict) -> dict | None:
    """Known params (say, logged as strings) typed for this study's space; None when one is
    missing or lies outside it."""
    from optuna.distributions import FloatDistribution, IntDistribution

    fitted = {}
    for name, distribution in distributions(config).items():
        if name not in params:
            return None
        value = params[name]
        if isinstance(distribution, IntDistribution):
            value = int(float(value))
        elif isinstance(distribution, FloatDistribution):
            value = float(value)
        elif value not in distribution.choices:
            value = int(value)
        if not distribution._contains(distribution.to_internal_repr(value)):
            return None
        fitted[name] = value
    return fitted
