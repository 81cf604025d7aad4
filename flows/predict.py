"""Predict flow: classify a CSV/TSV/JSONL file with the champion (or a given version).

Writes every input row with `predicted_label` and `probability`, and records the job
(model version, input, row count, the predictions file) as an MLflow run.
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.cli import flow_main
from tasks import prediction, tracking
from tasks.config import PredictConfig

read_inputs = task(prediction.read_inputs, name="read-inputs", cache_policy=NONE)
predict_frame = task(prediction.predict_frame, name="predict", cache_policy=NONE)


@flow(name="predict")
def predict(config: PredictConfig) -> dict:
    """Load the model, predict in batches, write the file, log the job."""
    logger = get_run_logger()
    client = tracking.connect(config.tracking_uri)
    uri, version = prediction.model_uri(
        client, config.registered_model_name, config.model_version, config.runtime
    )
    frame = read_inputs(config.input_path, config.text_column, config.text_pair_column)
    output_path = config.output_path or config.input_path.with_suffix(".predictions.csv")
    tags = {"finetrack.flow": "predict"}
    with tracking.tracked_run(client, config.experiment_name, "predict", tags) as run_id:
        tracking.log_params(
            client,
            run_id,
            {
                **config.model_dump(),
                "model_uri": uri,
                "model_version": version,
                "rows": len(frame),
            },
        )
        result = predict_frame(
            uri, frame, config.text_column, config.text_pair_column, config.batch_size
        )
        output_path.parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(output_path, index=False)
        client.log_artifact(run_id, str(output_path))
        counts = result["predicted_label"].value_counts().to_dict()
        tracking.log_metrics(client, run_id, {f"predicted_{k}": v for k, v in counts.items()})
    logger.info("%d predictions with %s written to %s", len(result), uri, output_path)
    return {
        "run_id": run_id,
        "model_uri": uri,
        "output_path": str(output_path),
        "rows": len(result),
    }


main = flow_main("predict")


if __name__ == "__main__":
    sys.exit(main())
