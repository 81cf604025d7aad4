"""ONNX export of a fine-tuned classifier, for CPU serving with ONNX Runtime (no torch).

`fp32` is the model as trained; `int8` stores the weights of its matrix products as int8 in
blocks of 16 (`quantize_int8`) and multiplies in int8, each row's activations quantised on
their own. Which labels it still gets right, and how fast it predicts, is measured on the
validation split against the full model and recorded with the export
(`log_checked_export`), never assumed.
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
from tasks.registry import Holdout, timed_labels

log = logging.getLogger(__name__)

OnnxPrecision = Literal["fp32", "int8"]
ONNX_REQUIREMENTS = ("onnxruntime", "transformers", "mlflow")  # what serving it needs


def export_onnx(model, tokenizer, folder: Path, precision: OnnxPrecision) -> Path:
    """Write `model.onnx` (batch and sequence length dynamic), the tokenizer and the model
    config (label names) into `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    # a fresh module with the trained weights: the Trainer's model keeps accelerate's bf16
    # autocast around its forward, which the exporter would trace into bf16 MatMuls
    cpu_model = type(model)(model.config)
    cpu_model.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    cpu_model.eval()
    graph = folder / ("model.onnx" if precision == "fp32" else "model.fp32.onnx")
    write_graph(cpu_model, tokenizer, graph)
    if precision == "int8":
        quantize_int8(graph, folder / "model.onnx")
        graph.unlink()
        for data in folder.glob("model.fp32.onnx*"):  # external weights, if any
            data.unlink()
    tokenizer.save_pretrained(folder)
    cpu_model.config.save_pretrained(folder)
    log.info("exported ONNX (%s) to %s", precision, folder)
    return folder


def write_graph(module, tokenizer, graph: Path) -> Path:
    """`module` (fp32, on the CPU, in eval mode) as an ONNX graph at `graph`, its inputs
    the tokenizer's and their batch and sequence dimensions dynamic."""
    import torch

    sample = tokenizer(
        ["a sentence", "another one"], ["a pair", "b"], padding=True, return_tensors="pt"
    )
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed": it is not needed
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter about traced shapes
        torch.onnx.export(
            module,
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
    return graph


def quantize_int8(source: Path, out: Path, block_size: int = 16, accuracy_level: int = 4) -> Path:
    """The weights of every MatMul with a weight input as symmetric int8 in blocks of
    `block_size` along the inner dimension (ONNX Runtime's MatMulNBits); accuracy level 4
    multiplies in int8 where the CPU has the kernel, quantising each row's activations per
    block as it runs, so a row's score does not depend on its batch neighbours (dynamic
    quantisation's per-batch scales moved a probability by up to 0.61). On the default model
    of MRPC (seed 42) blocks of 16 kept 99.75% of the validation and 99.65% of the test labels
    (blocks of 32: 99.51% / 99.36%; dynamic per-channel int8: 96.08% / 97.04%;
    bench/recorded/2026-12-06-cpu-avx512bf16-int8-blockwise)."""
    import onnx

    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # calls logging.basicConfig
        MatMulNBitsQuantizer,
    )

    root.handlers[:] = handlers
    root.setLevel(root_level)

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)), bits=8, block_size=block_size, is_symmetric=True,
        accuracy_level=accuracy_level,
    )  # fmt: skip
    quantizer_log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quantizer_log.level
    quantizer_log.setLevel(logging.WARNING)  # a line per node it leaves alone
    try:
        quantizer.process()
    finally:
        quantizer_log.setLevel(level)
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


# An export is fit to serve when it agrees with the full model on this share of the
# validation labels and its accuracy is at most this far below (issue 11's bar).
MIN_LABEL_AGREEMENT = 0.995
MAX_ACCURACY_DROP = 0.003


def parity(
    full: np.ndarray, full_seconds: float, onnx_uri: str, holdout: Holdout
) -> dict[str, float]:
    """The export scored on the holdout through `mlflow.pyfunc` against `full`, the full
    model's labels on the same rows in fp32 (`timed_labels`), which took `full_seconds`:
    label agreement, the export's accuracy and F1, its accuracy drop, and both models' rows
    per second there (one pass each on this machine, tokenisation included, loading left out)
    with their ratio."""
    exported, onnx_seconds = timed_labels(onnx_uri, holdout.frame, holdout.label_names)
    truth = holdout.frame["label"].to_numpy()
    full_metrics = compute_metrics(full, truth, holdout.scoring)
    onnx_metrics = compute_metrics(exported, truth, holdout.scoring)
    rows = len(holdout.frame)
    return {
        "onnx_label_agreement": float((full == exported).mean()),
        f"onnx_{holdout.split}_accuracy": onnx_metrics["accuracy"],
        f"onnx_{holdout.split}_f1": onnx_metrics["f1"],
        "onnx_accuracy_drop": full_metrics["accuracy"] - onnx_metrics["accuracy"],
        "onnx_rows_per_second": rows / onnx_seconds,
        "full_model_rows_per_second": rows / full_seconds,
        "onnx_speedup": full_seconds / onnx_seconds,
    }


def serving_device() -> str:
    """Where the full model's pyfunc predicts here (`tasks/serving/classifier.py`)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
    full_model_device: str = "cpu"  # where the full model was timed; the export runs on CPU

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
            f"{accuracy:.4f} ({measured['onnx_accuracy_drop'] * 100:+.2f} points below), "
            f"{measured['onnx_speedup']:.2f}x the full model's rows per second in fp32 there "
            f"(on {self.full_model_device}) "
            f"({measured['onnx_rows_per_second']:.1f} against "
            f"{measured['full_model_rows_per_second']:.1f}, at export): {verdict}."
        )


def log_checked_export(
    client: MlflowClient,
    run: Destination,
    package: ModelPackage,
    precision: OnnxPrecision,
    full: np.ndarray,
    full_seconds: float,
    holdout: Holdout,
    facts: model_card.CardFacts,
) -> OnnxExport:
    """Export, log as `model_onnx` beside the full model, score it against the full model's
    labels `full` on the holdout (predicted in `full_seconds`), record the parity (metrics
    `onnx_*`, tags `finetrack.onnx.*` that the predict flow reads) and write its card, which
    states it."""
    with tempfile.TemporaryDirectory() as folder:
        exported = export_onnx(package.model, package.tokenizer, Path(folder) / "onnx", precision)
        info = log_pyfunc_model(
            client, run, "model_onnx", {"onnx": str(exported)}, replace(package, card=""),
            ONNX_REQUIREMENTS,
        )  # fmt: skip
    measured = parity(full, full_seconds, info.model_uri, holdout)
    result = OnnxExport(precision, info.model_uri, measured, serving_device())
    served = model_card.served_by_onnx(precision, result.describe())
    write_card(client, info.model_id, model_card.render(facts, served))
    tracking.log_metrics(client, run.run_id, result.parity)
    client.set_tag(run.run_id, "finetrack.onnx.model_uri", result.model_uri)
    client.set_tag(run.run_id, "finetrack.onnx.fit_to_serve", str(result.fit_to_serve).lower())
    log.info("%s", result.describe())
    return result
