"""Which number decides "best": the objective metric, resolved against the data's labels.

GLUE scores MRPC and QQP by the F1 of a named positive class, and RTE, SST-2, QNLI and MNLI
by accuracy. The F1 of whichever label sorts second is no objective: binary F1 names its
positive class (`positive_label`; for integer labels 0/1 the default is 1, as in MRPC), text
labels with no positive class named are judged by accuracy, and F1 over more than two classes
(or two with no positive class) is macro F1, and says so.
"""

from __future__ import annotations

from tasks.config import FineTuneConfig
from tasks.errors import DataError
from tasks.uncertainty import Scoring


def integer_labels(config: FineTuneConfig, label_names: list[str]) -> bool:
    """True when the data's labels were integers (named by `label_names`, or "0".."K-1")."""
    return config.label_names is not None or all(name.isdigit() for name in label_names)


def resolve_objective(config: FineTuneConfig, label_names: list[str]) -> FineTuneConfig:
    """The config with `objective_metric` and `positive_label` as these labels decide them."""
    positive = config.positive_label
    if positive is not None and positive not in label_names:
        raise DataError(f"positive_label {positive!r} is not one of the labels {label_names}")
    if positive is not None and len(label_names) != 2:
        raise DataError(
            f"positive_label applies to two-class data; this data has {len(label_names)} "
            "classes (its F1 is macro F1)"
        )
    if positive is None and len(label_names) == 2 and integer_labels(config, label_names):
        positive = label_names[1]  # label 1, as GLUE's MRPC and QQP
    metric = config.objective_metric
    if metric == "auto":
        metric = "f1" if positive is not None else "accuracy"
    if (metric, positive) == (config.objective_metric, config.positive_label):
        return config
    return config.with_settings(objective_metric=metric, positive_label=positive)


def scoring(config: FineTuneConfig, label_names: list[str]) -> Scoring:
    """How a resolved config scores predictions of these labels."""
    positive = config.positive_label
    return Scoring(len(label_names), label_names.index(positive) if positive else None)


def describe(config: FineTuneConfig, label_names: list[str]) -> str:
    """One line for the run's start: what decides "best", and which F1 is reported."""
    if config.positive_label is not None:
        f1 = f"F1 of the positive class {config.positive_label!r}"
    else:
        f1 = f"macro F1 over {len(label_names)} classes"
    if config.objective_metric == "f1":
        return f"objective: validation {f1}"
    return f"objective: validation accuracy (F1 reported: {f1})"


def params(config: FineTuneConfig, label_names: list[str]) -> dict[str, str]:
    """What the run records beside the config's own `objective_metric` and `positive_label`."""
    return {"f1_average": scoring(config, label_names).f1_average}
