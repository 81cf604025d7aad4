"""The named steps the flows are composed of: every Prefect task wrapper of the project, and
the two steps every training flow shares, `prepare` (before any MLflow run) and `publish`
(the trained model packaged, carded, exported, scored once, registered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.promotion import register_and_promote
from tasks import (
    calibration,
    data,
    dataset_inputs,
    evaluation,
    machine_recipe,
    model,
    objective,
    onnx_export,
    packaging,
    tokenization,
    tracking,
    train,
)
from tasks.config import FineTuneConfig
from tasks.errors import BAD_INPUT
from tasks.model_card import CardFacts, render
from tasks.onnx_export import OnnxExport
from tasks.prepared import Prepared
from tasks.registry import Decision, PromotionPolicy, timed_labels
from tasks.worth_a_look import most_confidently_wrong

log = logging.getLogger(__name__)


def _retry_unless_bad_input(task_, task_run, state) -> bool:
    """Retry I/O hiccups (e.g. the Hub), never data that is simply wrong."""
    try:
        state.result()
    except BAD_INPUT:
        return False
    except Exception:
        return True
    return False


load_data = task(
    data.load_data,
    name="load-data",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_unless_bad_input,
    cache_policy=NONE,
)
resolve_model = task(model.resolve_model, name="resolve-model", cache_policy=NONE)
tokenize = task(tokenization.tokenize, name="tokenize", cache_policy=NONE)
record_params = task(tracking.log_params, name="log-params", cache_policy=NONE)
log_datasets = task(dataset_inputs.log_dataset_inputs, name="log-datasets", cache_policy=NONE)
fine_tune_model = task(train.train, name="train", cache_policy=NONE)
evaluate = task(evaluation.evaluate_model, name="evaluate", cache_policy=NONE)
log_evaluation = task(tracking.log_evaluation, name="log-evaluation", cache_policy=NONE)
record_calibration = task(calibration.record, name="calibration", cache_policy=NONE)
log_model = task(packaging.log_classifier_model, name="log-model", cache_policy=NONE)
score_logged_model = task(timed_labels, name="score-logged-model", cache_policy=NONE)
log_onnx_export = task(onnx_export.log_checked_export, name="log-onnx-export", cache_policy=NONE)


def named_by_config(name: Callable[[dict], str]) -> Callable[[], str]:
    """A flow run name made by `name` from the run's `config` parameter (a config or the
    mapping a deployment passes; empty when absent)."""

    def run_name() -> str:
        config = flow_run.parameters.get("config") or {}
        return name(config.model_dump() if isinstance(config, BaseModel) else config)

    return run_name


def prepare(config: FineTuneConfig) -> Prepared:
    """Locate the model, load and validate the data, resolve the objective on its labels and
    tokenize: once per flow, whatever the number of runs that train from it."""
    machine_recipe.refuse_emulated_bf16(config.bf16)
    model_path = resolve_model(config.model_name_or_path, config.freeze_layers, config.max_length)
    dataset = load_data(config)
    config = objective.resolve_objective(config, dataset.label_names)
    log.info("%s", objective.describe(config, dataset.label_names))
    tokenizer = tokenization.load_tokenizer(model_path)
    tokenized = tokenize(dataset, tokenizer, config.max_length, config.cache_dir)
    return Prepared(config, model_path, dataset, tokenizer, tokenized)


def record_inputs(client, run_id: str, prepared: Prepared) -> dict[str, object]:
    """The run's params (settings, inputs, library versions), data sets and `config.json`;
    returns the params."""
    params = {**prepared.config.params(), **prepared.inputs(), **tracking.library_versions()}
    record_params(client, run_id, params)
    log_datasets(client, run_id, prepared.data)
    tracking.log_files(client, run_id, {"config.json": prepared.config.model_dump(mode="json")})
    return params


def train_model(client, run_id: str, prepared: Prepared, output_dir) -> train.TrainResult:
    """Train the prepared config, each epoch's metrics logged to the run."""
    return fine_tune_model(
        prepared.config, prepared.model_path, prepared.tokenizer, prepared.tokenized.datasets,
        prepared.label_names, output_dir, callbacks=[tracking.EpochMetricsLogger(client, run_id)],
    )  # fmt: skip


def evaluate_run(client, run_id: str, prepared: Prepared, trained: train.TrainResult):
    """Score the held-out splits, calibrate, log both (and the rows worth a look); returns
    the results as the logged model scores them, and the calibration."""
    config, dataset = prepared.config, prepared.data
    results = evaluate(trained.trainer, prepared.tokenized.datasets, dataset, prepared.scoring)
    calibrated = record_calibration(client, run_id, results, config.calibrate)
    results = calibration.applied(results, calibrated.temperature)  # as the model scores
    log_evaluation(client, run_id, results, dataset.label_names)
    if config.worth_a_look_rows:
        wrong = most_confidently_wrong(
            results["validation"], dataset.label_names, config.worth_a_look_rows
        )
        tracking.log_files(client, run_id, {"worth_a_look_validation.csv": wrong})
    return results, calibrated


def record_training(client, run_id: str, trained: train.TrainResult, prepared: Prepared):
    """What training decided (params) and how long it and tokenizing took (metrics)."""
    record_params(client, run_id, trained.decided)
    timings = {
        "train_seconds": trained.train_seconds,
        "train_samples_per_second": trained.train_samples_per_second,
        "tokenize_seconds": prepared.tokenized.seconds,
    }
    tracking.log_metrics(client, run_id, timings)
    return timings


@dataclass(frozen=True)
class Published:
    """The logged model, its checked ONNX export and the promotion decision, where made, and
    the logged model's labels on the holdout rows, where it scored them."""

    model_uri: str
    onnx: OnnxExport | None = None
    decision: Decision | None = None
    holdout_labels: np.ndarray | None = None


def input_example(dataset: data.LoadedData) -> dict[str, str]:
    """The first validation row's texts: the logged model's signature columns."""
    row = dataset.splits["validation"].iloc[0]
    return {"text": row["text"], **({"text_pair": row["text_pair"]} if dataset.has_pair else {})}


def publish(
    client,
    run_id: str,
    run_name: str,
    params: dict[str, object],
    prepared: Prepared,
    trained: train.TrainResult,
    results: dict[str, evaluation.SplitResult],
    calibrated: calibration.Calibration,
) -> Published:
    """Log the trained model with its card (written from the values the run logged), export
    it to ONNX and register it, promoted only if better. The logged model scores the
    validation rows once, for both the export's parity and the promotion."""
    config = prepared.config
    started = time.perf_counter()
    facts = CardFacts(
        run_id, run_name, prepared.data, results, trained.recipe(config), prepared.model_path,
        calibrated.metrics, tracking.library_versions(),
    )  # fmt: skip
    package = packaging.ModelPackage(
        trained.trainer.model, prepared.tokenizer, input_example(prepared.data), render(facts),
        config.max_length, calibrated.temperature,
    )  # fmt: skip
    run = packaging.Destination(
        run_id,
        tracking.experiment_id(client, config.experiment_name),
        tracking.param_values(params | trained.decided),  # what the run logged
    )
    model_uri = log_model(client, run, package).model_uri
    tracking.log_metrics(client, run_id, {"log_model_seconds": time.perf_counter() - started})
    if config.onnx_export == "none" and not config.registered_model_name:
        return Published(model_uri)
    holdout = prepared.holdout()
    scored, seconds = score_logged_model(model_uri, holdout.frame, holdout.label_names)
    onnx = decision = None
    if config.onnx_export != "none":
        onnx = log_onnx_export(
            client, run, package, config.onnx_export, scored, seconds, holdout, facts
        )
    if config.registered_model_name:
        decision = register_and_promote(
            client, model_uri, run_id, config.registered_model_name, holdout,
            PromotionPolicy.of(config), scored, onnx,
        )  # fmt: skip
    return Published(model_uri, onnx, decision, scored)
