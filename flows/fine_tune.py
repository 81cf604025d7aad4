"""Fine-tune flow: data -> tokenize -> Trainer -> evaluate -> MLflow, as one Prefect flow.

Run it with `python -m flows.fine_tune --data-dir path/to/mrpc` (see `--help`), or as a
deployment with the parameter `config` (a mapping of FineTuneConfig settings).
Bad input (settings, data, model, tracking store) is refused before an MLflow run exists.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from flows.cli import flow_main
from flows.promotion import register_and_promote
from tasks import (
    calibration,
    data,
    evaluation,
    model,
    model_card,
    objective,
    onnx_export,
    provenance,
    tokenization,
    tracking,
    train,
)
from tasks.config import FineTuneConfig
from tasks.errors import BAD_INPUT
from tasks.registry import Holdout, PromotionPolicy
from tasks.reporting import FineTuneResult
from tasks.worth_a_look import most_confidently_wrong

log = logging.getLogger(__name__)
# Settings that make the training recipe, in the run's description.
RECIPE = ("learning_rate", "batch_size", "num_epochs", "weight_decay", "warmup_ratio", "seed")


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
record_inputs = task(tracking.log_params, name="log-params", cache_policy=NONE)
log_datasets = task(tracking.log_dataset_inputs, name="log-datasets", cache_policy=NONE)
fine_tune_model = task(train.train, name="train", cache_policy=NONE)
evaluate = task(evaluation.evaluate_model, name="evaluate", cache_policy=NONE)
log_evaluation = task(tracking.log_evaluation, name="log-evaluation", cache_policy=NONE)
record_calibration = task(calibration.record, name="calibration", cache_policy=NONE)
log_model = task(tracking.log_classifier_model, name="log-model", cache_policy=NONE)
log_onnx_export = task(onnx_export.log_checked_export, name="log-onnx-export", cache_policy=NONE)


def _flow_run_name() -> str:
    config = flow_run.parameters.get("config") or {}
    if isinstance(config, FineTuneConfig):
        config = config.model_dump()
    source = str(config.get("data_dir") or config.get("hub_dataset") or "glue/mrpc")
    name = source.rstrip("/").rsplit("/", 1)[-1]
    defaults = FineTuneConfig.model_fields
    learning_rate = config.get("learning_rate", defaults["learning_rate"].default)
    epochs = config.get("num_epochs", defaults["num_epochs"].default)
    return f"fine-tune-{name}-lr{learning_rate:g}-ep{epochs}"


@flow(name="fine-tune", flow_run_name=_flow_run_name)
def fine_tune(
    config: FineTuneConfig | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> FineTuneResult:
    """Fine-tune a text classifier on one data set and record everything in MLflow.

    `parent_run_id` nests the MLflow run under another (a search's study run), `tags` are
    added to the run.
    """
    config = config or FineTuneConfig()
    client = tracking.connect(config.tracking_uri)
    model_path = resolve_model(config.model_name_or_path, config.freeze_layers, config.max_length)
    dataset = load_data(config)
    config = objective.resolve_objective(config, dataset.label_names)
    log.info("%s", objective.describe(config, dataset.label_names))
    scoring = objective.scoring(config, dataset.label_names)
    advice = train.few_rows_warning(len(dataset.splits["train"]), config.batch_size)
    if advice:
        log.warning(advice)
    tokenizer = tokenization.load_tokenizer(model_path)
    tokenized = tokenize(dataset, tokenizer, config.max_length, config.cache_dir)

    tags = {
        "finetrack.flow": "fine-tune",
        "finetrack.data_fingerprint": dataset.fingerprint,
        **provenance.tags(config.threads),  # the code and the machine
        **(tags or {}),
    }
    run_name = config.run_name or flow_run.get_name()  # the same name in Prefect and MLflow
    with tracking.tracked_run(
        client, config.experiment_name, run_name, tags, parent_run_id
    ) as run_id:
        params = {
            **config.params(),
            "model_path": model_path,
            "data_source": dataset.source,
            "data_fingerprint": dataset.fingerprint,
            "num_labels": dataset.num_labels,
            "label_names": ",".join(dataset.label_names),
            "train_rows": len(dataset.splits["train"]),
            **objective.params(config, dataset.label_names),
            **tracking.library_versions(),
        }
        record_inputs(client, run_id, params)
        log_datasets(client, run_id, dataset)
        tracking.log_files(client, run_id, {"config.json": config.model_dump(mode="json")})

        output_dir = config.output_dir / run_id
        result = fine_tune_model(
            config,
            model_path,
            tokenizer,
            tokenized.datasets,
            dataset.label_names,
            output_dir,
            callbacks=[tracking.EpochMetricsLogger(client, run_id)],
        )
        results = evaluate(result.trainer, tokenized.datasets, dataset, scoring)
        calibrated = record_calibration(client, run_id, results, config.calibrate)
        results = calibration.applied(results, calibrated.temperature)  # as the model scores
        log_evaluation(client, run_id, results, dataset.label_names)
        if config.worth_a_look_rows:
            wrong = most_confidently_wrong(
                results["validation"], dataset.label_names, config.worth_a_look_rows
            )
            tracking.log_files(client, run_id, {"worth_a_look_validation.csv": wrong})
        record_inputs(client, run_id, result.decided)
        timings = {
            "train_seconds": result.train_seconds,
            "train_samples_per_second": result.train_samples_per_second,
            "tokenize_seconds": tokenized.seconds,
        }
        tracking.log_metrics(client, run_id, timings)
        outcome = FineTuneResult(
            run_id=run_id,
            run_name=run_name,
            experiment=config.experiment_name,
            tracking_uri=tracking.redact(client.tracking_uri),
            model=config.model_name_or_path,
            data_fingerprint=dataset.fingerprint,
            metrics={split: res.metrics for split, res in results.items() if res.metrics},
            timings=timings,
            bf16=result.bf16,
            tokenize_cache_hit=tokenized.cache_hit,
            recipe={name: getattr(config, name) for name in RECIPE} | result.decided,
        )
        if config.log_model:
            example = dataset.splits["validation"].iloc[0]
            input_example = {"text": example["text"]}
            if dataset.has_pair:
                input_example["text_pair"] = example["text_pair"]
            started = time.perf_counter()
            package = tracking.ModelPackage(
                result.trainer.model,
                tokenizer,
                input_example,
                model_card.render(client.get_run(run_id), dataset, results),
                config.max_length,
                calibrated.temperature,
            )
            outcome.model_uri = log_model(client, run_id, package).model_uri
            tracking.log_metrics(
                client, run_id, {"log_model_seconds": time.perf_counter() - started}
            )
            holdout = Holdout(dataset.splits["validation"], dataset.label_names, scoring)
            if config.onnx_export != "none":
                outcome.onnx = log_onnx_export(
                    client, run_id, package, config.onnx_export, outcome.model_uri, holdout
                )
            if config.registered_model_name:
                outcome.decision = register_and_promote(
                    client,
                    outcome.model_uri,
                    run_id,
                    config.registered_model_name,
                    holdout,
                    PromotionPolicy.of(config),
                )
        tracking.describe(client, run_id, outcome.description(dataset.summary()))
        shutil.rmtree(output_dir, ignore_errors=True)

    create_markdown_artifact(outcome.markdown(), key="fine-tune-summary")
    log.info("\n%s\n", outcome.markdown())
    log.info("Browse it: finetrack ui (MLflow run %s, experiment %r)", run_id, outcome.experiment)
    return outcome


main = flow_main("fine-tune")


if __name__ == "__main__":
    sys.exit(main())
