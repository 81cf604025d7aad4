"""Fine-tune flow: data -> tokenize -> Trainer -> evaluate -> MLflow, as one Prefect flow.

Run it with `python -m flows.fine_tune --data-dir path/to/mrpc` (see `--help`), or as a
deployment with the parameter `config` (a mapping of FineTuneConfig settings).
Bad input (settings, data, model, tracking store) is refused before an MLflow run exists.
"""

from __future__ import annotations

import logging
import shutil
import sys

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.cli import flow_main
from flows.steps import (
    evaluate_run,
    named_by_config,
    prepare,
    publish,
    record_inputs,
    record_training,
    train_model,
)
from tasks import provenance, tracking, train
from tasks.config import FineTuneConfig
from tasks.prepared import Prepared
from tasks.reporting import FineTuneResult

log = logging.getLogger(__name__)


def run_name(config: dict) -> str:
    """`fine-tune-<data folder>-lr<learning rate>-ep<epochs>`, from the run's config."""
    source = str(config.get("data_dir") or config.get("hub_dataset") or "glue/mrpc")
    defaults = FineTuneConfig.model_fields
    learning_rate = config.get("learning_rate", defaults["learning_rate"].default)
    epochs = config.get("num_epochs", defaults["num_epochs"].default)
    return f"fine-tune-{source.rstrip('/').rsplit('/', 1)[-1]}-lr{learning_rate:g}-ep{epochs}"


@flow(name="fine-tune", flow_run_name=named_by_config(run_name))
def fine_tune(
    config: FineTuneConfig | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    prepared: Prepared | None = None,
) -> FineTuneResult:
    """Fine-tune a text classifier on one data set and record everything in MLflow.

    `parent_run_id` nests the MLflow run under another (a search's study run), `tags` are
    added to the run, `prepared` holds the inputs a search or a retrain prepared once for
    all of its runs (else they are prepared here).
    """
    config = config or FineTuneConfig()
    client = tracking.connect(config.tracking_uri)
    prepared = prepared.for_config(config) if prepared else prepare(config)
    config, dataset = prepared.config, prepared.data
    advice = train.few_rows_warning(len(dataset.splits["train"]), config.batch_size)
    if advice:
        log.warning(advice)
    tags = {
        "finetrack.flow": "fine-tune",
        "finetrack.data_fingerprint": dataset.fingerprint,
        **provenance.tags(config.threads),  # the code and the machine
        **(tags or {}),
    }
    name = config.run_name or flow_run.get_name()  # the same name in Prefect and MLflow
    with tracking.tracked_run(client, config.experiment_name, name, tags, parent_run_id) as run_id:
        params = record_inputs(client, run_id, prepared)
        output_dir = config.output_dir / run_id
        trained = train_model(client, run_id, prepared, output_dir)
        results, calibrated = evaluate_run(client, run_id, prepared, trained)
        outcome = FineTuneResult(
            run_id=run_id,
            run_name=name,
            experiment=config.experiment_name,
            tracking_uri=tracking.redact(client.tracking_uri),
            model=config.model_name_or_path,
            data_fingerprint=dataset.fingerprint,
            metrics={split: res.metrics for split, res in results.items() if res.metrics},
            timings=record_training(client, run_id, trained, prepared),
            bf16=trained.bf16,
            tokenize_cache_hit=prepared.tokenized.cache_hit,
            recipe=trained.recipe(config),
        )
        if config.log_model:
            published = publish(
                client, run_id, name, params, prepared, trained, results, calibrated
            )
            outcome.model_uri, outcome.onnx = published.model_uri, published.onnx
            outcome.decision, outcome.holdout_labels = published.decision, published.holdout_labels
        tracking.describe(client, run_id, outcome.description(dataset.summary()))
        shutil.rmtree(output_dir, ignore_errors=True)

    create_markdown_artifact(outcome.markdown(), key="fine-tune-summary")
    log.info("\n%s\n", outcome.markdown())
    log.info("Browse it: finetrack ui (MLflow run %s, experiment %r)", run_id, outcome.experiment)
    return outcome


main = flow_main("fine-tune")


if __name__ == "__main__":
    sys.exit(main())
