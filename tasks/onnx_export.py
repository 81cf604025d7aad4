"""ONNX export of a fine-tuned classifier, for CPU serving with ONNX Runtime (no torch).

`fp32` is the model as trained; `int8` quantises the weights of its matrix products
dynamically (activations are quantised per batch at run time), a quarter of the size.
Which labels it still gets right is measured on the validation split, against the full
model's labels there, and recorded with the export (`log_checked_export`), never assumed.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from mlflow.tracking import MlflowClient

from tasks import model_card, tracking
from tasks.evaluation import compute_metrics
from tasks.packaging import Destination, ModelPackage, log_pyfunc_model, write_card
from tasks.registry import Holdout, predict_labels

log = logging.getLogger(__name__)

OnnxPrecision = Literal["fp32", "int8"]
ONNX_REQUIREMENTS = ("onnxruntime", "transformers", "mlflow")  # what serving it needs


def export_onnx(model, tokenizer, folder: Path, precision: OnnxPrecision) -> Path:
    """Write `model.onnx` (batch and sequence length dynamic), the tokenizer and the model
    config (label names) into `folder`; returns the folder."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    # a fresh module with the trained weights: the Trainer's model keeps accelerate's bf16
    # autocast around its forward, which the exporter would trace into bf16 MatMuls
    cpu_model = type(model)(model.config)
    cpu_model.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    cpu_model.eval()
    sample = tokenizer(
        ["a sentence", "another one"], ["a pair", "b"], padding=True, return_tensors="pt"
    )
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    graph = folder / ("model.onnx" if precision == "fp32" else "model.fp32.onnx")
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed": it is not needed
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter about traced shapes
        torch.onnx.export(
            cpu_model,
            (),
            str(graph),
            kwargs={name: sample[name] for name in names},
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={name: dims for name in names},
            dynamo=True,
            verbose=False,
        )
    exporter_log.setLevel(level)
    if precision == "int8":
        # per-channel weight scales: on fine-tuned MiniLM/MRPC validation they kept 96.8% of
        # the full model's labels against 93.4% with one scale per matrix
        logging.disable(logging.WARNING)  # a root-logger hint to pre-process; not needed
        try:
            quantize_dynamic(
                str(graph), str(folder / "model.onnx"), weight_type=QuantType.QInt8,
                per_channel=True,
            )  # fmt: skip
        finally:
            logging.disable(logging.NOTSET)
        graph.unlink()
        for data in folder.glob("model.fp32.onnx*"):  # external weights, if any
            data.unlink()
    tokenizer.save_pretrained(folder)
    cpu_model.config.save_pretrained(folder)
    log.info("exported ONNX (%s) to %s", precision, folder)
    return folder


# An export is fit to serve when it agrees with the full model on this share of the
# validation labels and its accuracy is at most this far below (issue 11's bar).
MIN_LABEL_AGREEMENT = 0.995
MAX_ACCURACY_DROP = 0.003


def parity(full: np.ndarray, onnx_uri: str, holdout: Holdout) -> dict[str, float]:
    """The export scored on the holdout through `mlflow.pyfunc` against `full`, the full
    model's labels on the same rows in fp32 (`predict_labels`): label agreement, the export's
    accuracy and F1, and its accuracy drop."""
    exported = predict_labels(onnx_uri, holdout.frame, holdout.label_names)
    truth = holdout.frame["label"].to_numpy()
    full_metrics = compute_metrics(full, truth, holdout.scoring)
    onnx_metrics = compute_metrics(exported, truth, holdout.scoring)
    return {
        "onnx_label_agreement": float((full == exported).mean()),
        f"onnx_{holdout.split}_accuracy": onnx_metrics["accuracy"],
        f"onnx_{holdout.split}_f1": onnx_metrics["f1"],
        "onnx_accuracy_drop": full_metrics["accuracy"] - onnx_metrics["accuracy"],
    }


def passes(measured: dict[str, float]) -> bool:
    return (
        measured["onnx_label_agreement"] >= MIN_LABEL_AGREEMENT
        and measured["onnx_accuracy_drop"] <= MAX_ACCURACY_DROP
    )


@dataclass(frozen=True)
class OnnxExport:
    """A logged ONNX export and how it compares with the full model."""

    precision: OnnxPrecision
    model_uri: str
    parity: dict[str, float]

    @property
    def fit_to_serve(self) -> bool:
        return passes(self.parity)

    def describe(self) -> str:
        measured = self.parity
        accuracy = next(value for key, value in measured.items() if key.endswith("_accuracy"))
        verdict = "fit to serve" if self.fit_to_serve else "FAILED parity, not served"
        return (
            f"ONNX export ({self.precision}) `{self.model_uri}`: labels agree with the full "
            f"model on {measured['onnx_label_agreement']:.2%} of the validation rows, accuracy "
            f"{accuracy:.4f} ({measured['onnx_accuracy_drop'] * 100:+.2f} points below): "
            f"{verdict}."
        )


def log_checked_export(
    client: MlflowClient,
    run: Destination,
    package: ModelPackage,
    precision: OnnxPrecision,
    full: np.ndarray,
    holdout: Holdout,
    facts: model_card.CardFacts,
) -> OnnxExport:
    """Export, log as `model_onnx` beside the full model, score it against the full model's
    labels `full` on the holdout, record the parity (metrics `onnx_*`, tags `finetrack.onnx.*`
    that the predict flow reads) and write its card, which states it."""
    with tempfile.TemporaryDirectory() as folder:
        exported = export_onnx(package.model, package.tokenizer, Path(folder) / "onnx", precision)
        info = log_pyfunc_model(
            client, run, "model_onnx", {"onnx": str(exported)}, replace(package, card=""),
            ONNX_REQUIREMENTS,
        )  # fmt: skip
    result = OnnxExport(precision, info.model_uri, parity(full, info.model_uri, holdout))
    served = model_card.served_by_onnx(precision, result.describe())
    write_card(client, info.model_id, model_card.render(facts, served))
    tracking.log_metrics(client, run.run_id, result.parity)
    client.set_tag(run.run_id, "finetrack.onnx.model_uri", result.model_uri)
    client.set_tag(run.run_id, "finetrack.onnx.fit_to_serve", str(result.fit_to_serve).lower())
    log.info("%s", result.describe())
    return result
