"""Experiment: an int8 ONNX Runtime quantisation of a fine-tuned sentence-pair classifier
that keeps the fp32 model's labels, found among named variants and measured.

The bar (issue 11's, `tasks.onnx_export`): labels agree with the full model in fp32 (plain
torch forward passes) on >= 99.5 % of the validation and of the test rows, and accuracy at
most 0.3 points lower, on both splits. Every variant starts from the fp32 graph of the
project's own export (`tasks.onnx_export.export_onnx(..., "fp32")`) and is measured for:
- label agreement and accuracy on validation and test (MRPC: 408 and 1,725 rows);
- batch dependence: the validation rows scored in batches of 1, 7, 32 and 64 (sorted by
  length and padded per batch, as the served model does): the largest change of a
  probability and the rows whose label is not the same at every batch size;
- speed: rows/s on the test rows in batches of 64 (ONNX Runtime CPU, default intra-op
  threads), best of `--repeats`, against the fp32 graph and against plain fp32 torch
  forward passes (`torch.no_grad`, batches in length order as `tasks.tokenization.by_length`);
  batches are tokenised and padded before the clock starts, for every engine alike;
- the kernels ONNX Runtime runs after its graph optimisations (are the QDQ pairs fused into
  integer MatMuls, or dequantised back to fp32?) and the size on disk.

Variants are named by dash-separated tokens:
- `dynamic`: `quantize_dynamic(per_channel=True, weight_type=QInt8)`, the product's int8 export
  until 2026-12-06 (it also quantises the embedding tables: `Gather`); `-matmul`: MatMul only;
  `-rr`: reduce_range.
- `static-<u8|s8>-<minmax|percentile|entropy>`: `quantize_static`, QDQ format, per-channel int8
  weights, activations QUInt8 / QInt8 calibrated on `--calibration-rows` train rows (batches
  of 16, length order, padded per batch) by that method, `op_types_to_quantize=["MatMul"]`;
  options: `-weights` only MatMuls with a weight input (the attention products QK^T and
  probs x V stay fp32, by `nodes_to_exclude`: the QDQ quantiser ignores `MatMulConstBOnly`),
  `-gemm` also the pooler and classifier Gemms, `-rr` reduce_range (7-bit weights, for CPUs
  without VNNI), `-sym` symmetric activations, `-fpout` no QDQ on the MatMul outputs
  (`OpTypesToExcludeOutputQuantization`).
- `blockwise-b<N>-acc<L>`: `tasks.onnx_export.quantize_int8` (the product's int8 export is
  `blockwise-b16-acc4`): MatMulNBits, symmetric int8 weights in blocks of N along the inner
  dimension; accuracy level 4 multiplies in int8 with each row's activations quantised per
  block, level 1 dequantises the weights and multiplies in fp32.
- `-sq<NN>` (static, fallback and `fp32`): SmoothQuant (Xiao et al., 2023) before quantising,
  alpha NN/100: each encoder Linear computes `linear(x / s)` with its weight's input columns
  times `s`, `s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)` from the calibration rows, so the
  same function puts the activations' large channels into the weights. `fp32-sq<NN>` is the
  smoothed graph unquantised (it must agree with fp32).
- `fallback-<static options>`: accuracy-driven fallback on that static variant. Each MatMul's
  harm is measured alone (only that node quantised: label flips against fp32 on
  `--selection-rows` train rows not used for calibration, then the mean probability change),
  and the k most harmful nodes stay fp32 (`nodes_to_exclude`), k growing until the selection
  rows agree on >= `--selection-target`. Validation and test never choose anything.

Quick development run (meaningless numbers with an untrained head):

    flock /tmp/finetrack-cpu.lock .venv/bin/python -m bench.int8_fallback \\
        --model-dir /tmp/int8/base-model --data-dir ../shared/data/mrpc --rows 48 \\
        --calibration-rows 32 --selection-rows 48 --repeats 1

Prints a table and writes JSON (`--results`, default bench/results/int8_fallback.json).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
from datasets import Dataset
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bench.common import RESULTS, save
from tasks.onnx_export import (
    MAX_ACCURACY_DROP,
    MIN_LABEL_AGREEMENT,
    export_onnx,
    quantize_int8,
    write_graph,
)
from tasks.tokenization import by_length

DEFAULT_VARIANTS = (
    "blockwise-b16-acc4,blockwise-b32-acc4,blockwise-b16-acc1,dynamic,dynamic-matmul,dynamic-rr,static-u8-minmax,static-s8-minmax-sym,"
    "static-u8-percentile,static-s8-percentile-sym,static-u8-minmax-rr,static-u8-minmax-weights,"
    "static-u8-percentile-weights,static-u8-minmax-fpout,static-u8-minmax-weights-fpout,"
    "fallback-u8-minmax"
)
BATCH_SIZES = (1, 7, 32, 64)  # batch dependence; the first is the reference
SPEED_BATCH = 64
CALIBRATION_BATCH = 16
KERNELS = ("MatMul", "MatMulNBits", "Gemm", "QLinearMatMul", "MatMulInteger",
           "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm", "QuantizeLinear",
           "DequantizeLinear", "DynamicQuantizeLinear", "QAttention", "Attention")  # fmt: skip
SDPA = "scaled_dot_product_attention"
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
ACTIVATIONS = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
Predict = Callable[[dict[str, np.ndarray]], np.ndarray]  # a padded batch -> logits


# ----------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One quantisation recipe, parsed from its name."""

    name: str
    kind: str  # dynamic, static or fallback
    activation: str = "u8"
    method: str = "minmax"
    weights_only: bool = False
    gemm: bool = False
    reduce_range: bool = False
    symmetric: bool = False
    float_out: bool = False
    matmul_only: bool = False  # dynamic: leave Gather (embeddings) alone
    block_size: int = 16  # blockwise
    accuracy_level: int = 4  # blockwise
    smooth_alpha: float | None = None  # SmoothQuant's alpha; None: not smoothed

    @property
    def op_types(self) -> list[str]:
        return ["MatMul", "Gemm"] if self.gemm else ["MatMul"]


FLAGS = {"weights": "weights_only", "gemm": "gemm", "rr": "reduce_range", "sym": "symmetric",
         "fpout": "float_out", "matmul": "matmul_only"}  # fmt: skip


def parse_variant(name: str) -> Variant:
    kind, *tokens = name.split("-")
    if kind not in ("dynamic", "static", "fallback", "blockwise", "fp32"):
        raise ValueError(f"{name}: starts with dynamic, static, blockwise, fallback or fp32")
    variant = Variant(name, kind)
    for token in tokens:
        if token.startswith("acc") and token[3:].isdigit():
            variant = replace(variant, accuracy_level=int(token[3:]))
        elif token.startswith("sq") and token[2:].isdigit():
            variant = replace(variant, smooth_alpha=int(token[2:]) / 100)
        elif token.startswith("b") and token[1:].isdigit():
            variant = replace(variant, block_size=int(token[1:]))
        elif token in ACTIVATIONS:
            variant = replace(variant, activation=token)
        elif token in METHODS:
            variant = replace(variant, method=token)
        elif token in FLAGS:
            variant = replace(variant, **{FLAGS[token]: True})
        else:
            raise ValueError(f"{name}: unknown token {token!r}")
    if variant.smooth_alpha is not None and kind not in ("static", "fallback", "fp32"):
        raise ValueError(f"{name}: sq<NN> goes with static, fallback or fp32")
    return variant


# ----------------------------------------------------------------------------- data


@dataclass
class Rows:
    """Tokenised rows of one split (unpadded) and their labels."""

    features: list[dict[str, list[int]]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def read_split(data_dir: Path, split: str) -> pd.DataFrame:
    """An MRPC TSV (no quoting: sentences hold bare `"`), label as int."""
    frame = pd.read_csv(
        data_dir / f"{split}.tsv", sep="\t", quoting=3, dtype=str, keep_default_na=False
    )
    return frame.assign(label=frame["label"].astype(int))


def encode(tokenizer, frame: pd.DataFrame, max_length: int) -> Rows:
    encoded = tokenizer(
        list(frame["sentence1"]), list(frame["sentence2"]), truncation=True, max_length=max_length
    )
    keys = list(encoded.keys())
    features = [{key: encoded[key][i] for key in keys} for i in range(len(frame))]
    return Rows(features, frame["label"].to_numpy())


def length_order(rows: Rows) -> np.ndarray:
    """The project's evaluation order: by token count, stable."""
    ids = [feature["input_ids"] for feature in rows.features]
    return by_length(Dataset.from_dict({"input_ids": ids}))[1]


def batches(tokenizer, rows: Rows, size: int, names: list[str]) -> list[tuple[np.ndarray, dict]]:
    """(row indices, padded int64 feed with `names`) in length order, `size` rows a batch."""
    order = length_order(rows)
    result = []
    for start in range(0, len(order), size):
        chosen = order[start : start + size]
        padded = tokenizer.pad([rows.features[i] for i in chosen], return_tensors="np")
        result.append((chosen, {name: padded[name].astype(np.int64) for name in names}))
    return result


def subset(rows: Rows, indices: np.ndarray) -> Rows:
    return Rows([rows.features[i] for i in indices], rows.labels[indices])


# ----------------------------------------------------------------------------- scoring


def probabilities(predict: Predict, batched: list[tuple[np.ndarray, dict]], n: int) -> np.ndarray:
    """Softmax of the logits (float64, as the served model) in the rows' own order."""
    result = None
    for chosen, feed in batched:
        logits = predict(feed).astype(np.float64)
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        if result is None:
            result = np.empty((n, logits.shape[-1]), dtype=np.float64)
        result[chosen] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def torch_predict(model) -> Predict:
    def predict(feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            inputs = {key: torch.from_numpy(value) for key, value in feed.items()}
            return model(**inputs).logits.float().numpy()

    return predict


def session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()  # intra-op threads: ONNX Runtime's default
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(graph: ort.InferenceSession) -> Predict:
    return lambda feed: graph.run(None, feed)[0]


def throughput(predict: Predict, batched: list[tuple[np.ndarray, dict]], repeats: int) -> list:
    """Rows/s of each pass over the batches, after one warm-up batch."""
    predict(batched[0][1])
    rows = sum(len(chosen) for chosen, _ in batched)
    speeds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _, feed in batched:
            predict(feed)
        speeds.append(rows / (time.perf_counter() - started))
    return speeds


@dataclass
class Bench:
    """What every model is scored on, and the fp32 reference."""

    tokenizer: object
    names: list[str]  # the graph's input names
    splits: dict[str, Rows]  # validation, test, selection
    batched: dict[str, list]  # split -> batches of 64
    reference: dict[str, np.ndarray]  # split -> torch fp32 probabilities
    repeats: int

    def labels(self, split: str) -> np.ndarray:
        return self.reference[split].argmax(-1)

    def score(self, predict: Predict, split: str) -> np.ndarray:
        return probabilities(predict, self.batched[split], len(self.splits[split]))


def agreement(bench: Bench, split: str, probs: np.ndarray) -> dict[str, float]:
    truth = bench.splits[split].labels
    labels = probs.argmax(-1)
    accuracy = float((labels == truth).mean())
    fp32_accuracy = float((bench.labels(split) == truth).mean())
    return {
        "agreement": float((labels == bench.labels(split)).mean()),
        "accuracy": accuracy,
        "accuracy_drop": fp32_accuracy - accuracy,
        "max_abs_probability_change": float(np.abs(probs - bench.reference[split]).max()),
    }


def batch_dependence(bench: Bench, predict: Predict) -> dict[str, float]:
    """The validation rows at each batch size: the largest probability change against batch 1
    and the rows whose label differs between any two batch sizes."""
    rows = bench.splits["validation"]
    probs = [
        probabilities(predict, batches(bench.tokenizer, rows, size, bench.names), len(rows))
        for size in BATCH_SIZES
    ]
    labels = np.stack([p.argmax(-1) for p in probs])
    return {
        "batch_max_abs_probability_difference": float(
            max(np.abs(p - probs[0]).max() for p in probs)
        ),
        "batch_label_flips": int((labels != labels[0]).any(axis=0).sum()),
    }


def kernels(path: Path, folder: Path) -> dict[str, int]:
    """Counts of the matrix-product and (de)quantisation ops after ORT's optimisations."""
    optimized = folder / f"{path.stem}.optimized.onnx"
    session(path, optimized)
    graph = onnx.load(str(optimized), load_external_data=False).graph
    counts = Counter(node.op_type for node in graph.node)
    optimized.unlink()
    return {op: counts[op] for op in KERNELS if counts[op]}


def size_mb(path: Path) -> float:
    files = [path, *path.parent.glob(f"{path.name}.data")]
    return sum(file.stat().st_size for file in files) / 2**20


def measure(bench: Bench, path: Path, folder: Path) -> dict:
    """Everything the table shows about one ONNX model."""
    graph = session(path)
    predict = onnx_predict(graph)
    result: dict = {"size_mb": size_mb(path), "kernels": kernels(path, folder)}
    for split in ("validation", "test"):
        result[split] = agreement(bench, split, bench.score(predict, split))
    result.update(batch_dependence(bench, predict))
    result["rows_per_second"] = throughput(predict, bench.batched["test"], bench.repeats)
    result["passes_bar"] = all(
        result[split]["agreement"] >= MIN_LABEL_AGREEMENT
        and result[split]["accuracy_drop"] <= MAX_ACCURACY_DROP
        for split in ("validation", "test")
    )
    return result


# ----------------------------------------------------------------------------- graphs


@dataclass(frozen=True)
class MatMulNode:
    """A quantisable node of the fp32 graph: its name, what it computes, B a weight or not."""

    name: str
    op_type: str
    role: str  # the torch module it came from, e.g. layer.0.attention.self.query
    weight: bool  # one input is an initializer (else activation x activation)


def matmul_nodes(fp32: Path) -> list[MatMulNode]:
    """MatMul and Gemm nodes in graph order. The dynamo exporter names them by op and
    counter (`node_MatMul_82`); the module path comes from its `pkg.torch.onnx.name_scopes`
    metadata. The two products inside scaled_dot_product_attention are `scores` (QK^T) and
    `context` (probs x V), in that order."""
    graph = onnx.load(str(fp32), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    seen: Counter = Counter()
    nodes = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        role = module_path(node)
        if role.endswith(f".{SDPA}"):
            scope = role.removesuffix(f".{SDPA}")
            role = f"{scope}.{'context' if seen[scope] else 'scores'}"
            seen[scope] += 1
        weight = any(name in constants for name in node.input)
        nodes.append(MatMulNode(node.name, node.op_type, role, weight))
    return nodes


def module_path(node: onnx.NodeProto) -> str:
    meta = {prop.key: prop.value for prop in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if not scopes:
        return node.name
    names = ast.literal_eval(scopes)
    module = names[-2] if len(names) > 1 else names[-1]
    if names[-1].startswith(SDPA):
        module = f"{module}.{SDPA}"
    return module.removeprefix("bert.encoder.").removeprefix("bert.")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ONNX Runtime's quantisation tools log hints (pre-processing, opset) at WARNING."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Where symbolic shape inference drops its partial model when it fails
    (`sym_shape_infer_temp.onnx` and its data, in the current directory)."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def pre_process(fp32: Path, out: Path) -> dict:
    """`quant_pre_process` (symbolic shape inference, ORT basic optimisations, ONNX shape
    inference). Symbolic inference fails on the dynamo export without `auto_merge`; where
    everything fails, quantisation starts from the export as it is."""
    attempts = ({"auto_merge": True}, {"skip_symbolic_shape": True})
    errors = []
    for options in attempts:
        try:
            with quiet(), working_directory(out.parent):
                quant_pre_process(
                    str(fp32), str(out), save_as_external_data=True,
                    all_tensors_to_one_file=True, external_data_location=f"{out.name}.data",
                    **options,
                )  # fmt: skip
            return {"pre_processed": True, "options": options, "errors": errors}
        except Exception as error:  # recorded; the next attempt follows
            errors.append(f"{options}: {type(error).__name__}: {error}")
    return {"pre_processed": False, "errors": errors}


class Feeds(CalibrationDataReader):
    """Calibration batches, every feed with all of the graph's input names."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.iterator, None)

    def rewind(self) -> None:
        self.iterator = iter(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.iterator = iter(self.feeds[start_index:end_index])

    def __len__(self) -> int:
        return len(self.feeds)


@dataclass
class Quantiser:
    """Builds the variants' graphs from the fp32 export (dynamic) or its pre-processed copy
    (static), calibrating once per method and op types (`calibration_cache_path`)."""

    fp32: Path
    source: Path
    folder: Path
    calibration: list[dict[str, np.ndarray]]
    nodes: list[MatMulNode]  # of the fp32 graph

    @property
    def activation_products(self) -> list[str]:
        """MatMuls without a weight input: QK^T and probs x V."""
        return [node.name for node in self.nodes if not node.weight]

    def dynamic(self, variant: Variant, out: Path) -> Path:
        with quiet():
            quantize_dynamic(
                str(self.fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                reduce_range=variant.reduce_range,
                op_types_to_quantize=["MatMul"] if variant.matmul_only else None,
            )  # fmt: skip
        return out

    def static(
        self, variant: Variant, out: Path, include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> Path:  # fmt: skip
        # one batch per collection: the histogram calibrators (Percentile, Entropy) stack a
        # collection's outputs with np.asarray, which fails on batches of unequal length
        extra = {
            "ActivationSymmetric": variant.symmetric,
            "WeightSymmetric": True,
            "CalibStridedMinMax": 1,
        }
        if variant.weights_only:  # the QDQ quantiser ignores MatMulConstBOnly: name them
            exclude = [*(exclude or []), *self.activation_products]
        if variant.float_out:
            extra["OpTypesToExcludeOutputQuantization"] = variant.op_types
        cache = self.folder / "calibration" / f"{variant.method}-{'-'.join(variant.op_types)}.json"
        with quiet():
            quantize_static(
                str(self.source), str(out), Feeds(self.calibration),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=variant.op_types,
                per_channel=True, reduce_range=variant.reduce_range,
                activation_type=ACTIVATIONS[variant.activation], weight_type=QuantType.QInt8,
                nodes_to_quantize=include, nodes_to_exclude=exclude,
                calibrate_method=METHODS[variant.method], extra_options=extra,
                calibration_cache_path=str(cache),
            )  # fmt: skip
        return out


# ----------------------------------------------------------------------------- fallback


def selection_flips(bench: Bench, path: Path) -> tuple[int, float]:
    """Labels that differ from fp32 on the selection rows, and the mean probability change
    (of every class, averaged)."""
    probs = bench.score(onnx_predict(session(path)), "selection")
    reference = bench.reference["selection"]
    flips = int((probs.argmax(-1) != reference.argmax(-1)).sum())
    return flips, float(np.abs(probs - reference).mean())


def harms(bench: Bench, quantiser: Quantiser, variant: Variant, nodes: list[MatMulNode]) -> list:
    """Each node quantised alone: flips and mean probability change on the selection rows,
    most harmful first."""
    out = quantiser.folder / "one-node.onnx"
    measured = []
    for node in nodes:
        flips, change = selection_flips(bench, quantiser.static(variant, out, [node.name]))
        measured.append({**asdict(node), "flips": flips, "mean_probability_change": change})
        print(f"  harm {node.role:40s} flips {flips:3d}  mean |dp| {change:.5f}", flush=True)
    return sorted(measured, key=lambda m: (-m["flips"], -m["mean_probability_change"]))


def fallback(
    bench: Bench, quantiser: Quantiser, variant: Variant, nodes: list[MatMulNode],
    target: float, most: int | None,
) -> tuple[Path, dict]:  # fmt: skip
    """Exclude the k most harmful nodes, k = 0, 1, ... (at most `most`), until the selection
    rows agree on >= target; returns the last graph and the record (harms, steps, fp32 nodes)."""
    ranked = harms(bench, quantiser, variant, nodes)
    out = quantiser.folder / f"{variant.name}.onnx"
    steps = []
    for k in range(min(len(ranked), len(ranked) if most is None else most) + 1):
        excluded = [m["name"] for m in ranked[:k]]
        flips, change = selection_flips(bench, quantiser.static(variant, out, None, excluded))
        agree = 1 - flips / len(bench.splits["selection"])
        steps.append({"k": k, "selection_agreement": agree, "mean_probability_change": change})
        print(f"  fallback k={k:2d}: selection agreement {agree:.4f}", flush=True)
        if agree >= target:
            break
    kept = ranked[: steps[-1]["k"]]
    record = {
        "selection_rows": len(bench.splits["selection"]),
        "target": target,
        "reached": steps[-1]["selection_agreement"] >= target,
        "harms": ranked,
        "steps": steps,
        "fp32_nodes": [{"name": m["name"], "role": m["role"], "weight": m["weight"]} for m in kept],
    }
    return out, record


def candidates(nodes: list[MatMulNode], variant: Variant) -> list[MatMulNode]:
    """The nodes the base variant quantises (its op types; weight MatMuls only if asked)."""
    return [
        node for node in nodes
        if node.op_type in variant.op_types and (node.weight or not variant.weights_only)
    ]  # fmt: skip


# ----------------------------------------------------------------------------- SmoothQuant


class Smoothed(torch.nn.Module):
    """`linear` applied to x / scale, its weight's input columns times scale: the same
    function, with the activation's large channels moved into the weight. Takes `linear`
    over (its weight is scaled in place): `smooth` hands it the copy's own."""

    def __init__(self, linear: torch.nn.Linear, scale: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.linear.weight.data.mul_(scale)
        self.register_buffer("inverse", 1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inverse)


def input_maxima(model: torch.nn.Module, feeds: list[dict]) -> dict[str, torch.Tensor]:
    """The largest |value| per input channel that each encoder Linear sees on `feeds`."""
    maxima: dict[str, torch.Tensor] = {}

    def recorder(name: str):
        def record(_module, args) -> None:
            seen = args[0].detach().abs().flatten(0, -2).amax(0)
            maxima[name] = torch.maximum(maxima[name], seen) if name in maxima else seen

        return record

    handles = [
        module.register_forward_pre_hook(recorder(name))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".encoder.layer." in name
    ]
    with torch.no_grad():
        for feed in feeds:
            model(**{key: torch.from_numpy(value) for key, value in feed.items()})
    for handle in handles:
        handle.remove()
    return maxima


def smooth(model: torch.nn.Module, feeds: list[dict], alpha: float) -> torch.nn.Module:
    """A copy of `model` with every encoder Linear `Smoothed` by SmoothQuant's scale."""
    smoothed = copy.deepcopy(model)
    for name, activation in input_maxima(smoothed, feeds).items():
        parent, _, child = name.rpartition(".")
        linear = smoothed.get_submodule(name)
        weight = linear.weight.detach().abs().amax(0)
        scale = activation.clamp(min=1e-5) ** alpha / weight.clamp(min=1e-5) ** (1 - alpha)
        setattr(smoothed.get_submodule(parent), child, Smoothed(linear, scale.clamp(min=1e-5)))
    return smoothed.eval()


def smoothed_quantiser(
    model: torch.nn.Module, bench: Bench, quantiser: Quantiser, alpha: float
) -> Quantiser:
    """A quantiser of the model smoothed with `alpha` on the calibration rows."""
    folder = quantiser.folder / f"sq{round(alpha * 100)}"
    (folder / "fp32").mkdir(parents=True, exist_ok=True)
    graph = write_graph(smooth(model, quantiser.calibration, alpha), bench.tokenizer,
                        folder / "fp32" / "model.onnx")  # fmt: skip
    return make_quantiser(graph, folder, quantiser.calibration)[0]


# ----------------------------------------------------------------------------- main


def build(
    variant: Variant, quantiser: Quantiser, bench: Bench, args: argparse.Namespace
) -> tuple[Path, dict | None]:
    out = quantiser.folder / f"{variant.name}.onnx"
    if variant.kind == "fp32":
        return quantiser.fp32, None
    if variant.kind == "dynamic":
        return quantiser.dynamic(variant, out), None
    if variant.kind == "static":
        return quantiser.static(variant, out), None
    if variant.kind == "blockwise":
        return quantize_int8(quantiser.fp32, out, variant.block_size, variant.accuracy_level), None
    chosen = candidates(quantiser.nodes, variant)
    return fallback(bench, quantiser, variant, chosen, args.selection_target, args.max_fallback)


def make_quantiser(fp32: Path, folder: Path, calibration: list) -> tuple[Quantiser, dict]:
    """A quantiser of the graph `fp32`, its pre-processed copy and calibration caches in
    `folder`, and what pre-processing did."""
    source = folder / "pre" / "model.onnx"
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "calibration", ignore_errors=True)  # caches of an earlier run
    (folder / "calibration").mkdir()
    preprocessing = pre_process(fp32, source)
    start = source if preprocessing["pre_processed"] else fp32
    return Quantiser(fp32, start, folder, calibration, matmul_nodes(fp32)), preprocessing


def prepare(
    args: argparse.Namespace, folder: Path
) -> tuple[Bench, Quantiser, torch.nn.Module, dict, dict]:
    """Export, pre-process, tokenise, and score the torch fp32 reference."""
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    fp32 = export_onnx(model, tokenizer, folder / "fp32", "fp32") / "model.onnx"
    names = [graph_input.name for graph_input in session(fp32).get_inputs()]

    train = read_split(args.data_dir, "train")
    picked = np.random.default_rng(args.seed).permutation(len(train))
    calibration_rows = picked[: args.calibration_rows]
    selection_rows = picked[args.calibration_rows : args.calibration_rows + args.selection_rows]
    train_rows = encode(tokenizer, train, args.max_length)
    splits = {
        split: encode(tokenizer, read_split(args.data_dir, split).head(args.rows), args.max_length)
        for split in ("validation", "test")
    }
    splits["selection"] = subset(train_rows, selection_rows)
    calibration = [feed for _, feed in batches(
        tokenizer, subset(train_rows, calibration_rows), CALIBRATION_BATCH, names)]  # fmt: skip
    batched = {
        split: batches(tokenizer, rows, SPEED_BATCH, names) for split, rows in splits.items()
    }
    predict = torch_predict(model)
    reference = {
        split: probabilities(predict, batched[split], len(splits[split])) for split in splits
    }
    bench = Bench(tokenizer, names, splits, batched, reference, args.repeats)
    torch_row = {
        "rows_per_second": throughput(predict, batched["test"], args.repeats),
        **{split: agreement(bench, split, reference[split]) for split in ("validation", "test")},
        **batch_dependence(bench, predict),
    }
    quantiser, preprocessing = make_quantiser(fp32, folder, calibration)
    return bench, quantiser, model, preprocessing, torch_row


def table(results: dict[str, dict]) -> str:
    """One line per model: agreement with torch fp32, accuracy and its change (points), batch
    dependence, speed (best pass) against the fp32 graph and torch, size, the bar."""
    onnx_speed = max(results["onnx fp32"]["rows_per_second"])
    torch_speed = max(results["torch fp32"]["rows_per_second"])
    header = (
        f"{'model':36s} {'val agr':>8s} {'test agr':>8s} {'val acc':>7s} {'dAcc':>6s} "
        f"{'test acc':>8s} {'dAcc':>6s} {'batch dp':>9s} {'flips':>5s} {'rows/s':>7s} "
        f"{'x onnx':>6s} {'x torch':>7s} {'MB':>6s} bar"
    )
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        val, test = r["validation"], r["test"]
        speed = max(r["rows_per_second"])
        size = f"{r['size_mb']:6.1f}" if "size_mb" in r else f"{'':6s}"
        bar = {True: "PASS", False: "fail"}.get(r.get("passes_bar"), "")
        lines.append(
            f"{name:36s} {val['agreement']:8.2%} {test['agreement']:8.2%} "
            f"{val['accuracy']:7.4f} {-val['accuracy_drop'] * 100:+6.2f} "
            f"{test['accuracy']:8.4f} {-test['accuracy_drop'] * 100:+6.2f} "
            f"{r['batch_max_abs_probability_difference']:9.2e} {r['batch_label_flips']:5d} "
            f"{speed:7.1f} {speed / onnx_speed:6.2f} {speed / torch_speed:7.2f} {size} {bar}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, folder: Path) -> dict:
    variants = [parse_variant(name) for name in args.variants.split(",")]
    bench, quantiser, model, preprocessing, torch_row = prepare(args, folder)
    results = {"torch fp32": torch_row, "onnx fp32": measure(bench, quantiser.fp32, folder)}
    seconds, fallbacks, failures = {}, {}, {}
    smoothed: dict[float, Quantiser] = {}
    for variant in variants:
        print(f"variant {variant.name}", flush=True)
        started = time.perf_counter()
        try:
            alpha = variant.smooth_alpha
            if alpha is not None and alpha not in smoothed:
                smoothed[alpha] = smoothed_quantiser(model, bench, quantiser, alpha)
            chosen = quantiser if alpha is None else smoothed[alpha]
            path, record = build(variant, chosen, bench, args)
            built = time.perf_counter() - started
            results[variant.name] = measure(bench, path, folder)
        except Exception as error:  # recorded; the other variants still run
            failures[variant.name] = f"{type(error).__name__}: {error}"
            print(f"  FAILED: {failures[variant.name]}", flush=True)
            continue
        seconds[variant.name] = {"build": built, "total": time.perf_counter() - started}
        if record is not None:
            fallbacks[variant.name] = record
    print(table(results))
    for name, error in failures.items():
        print(f"{name}: FAILED {error}")
    for name, record in fallbacks.items():
        kept = ", ".join(node["role"] for node in record["fp32_nodes"]) or "none"
        print(f"{name}: fp32 nodes ({len(record['fp32_nodes'])}): {kept}")
    return {
        "args": {key: str(value) for key, value in vars(args).items()},
        "rows": {split: len(rows) for split, rows in bench.splits.items()},
        "calibration_rows": args.calibration_rows,
        "preprocessing": preprocessing,
        "nodes": [asdict(node) for node in quantiser.nodes],
        "variants": [asdict(variant) for variant in variants],
        "results": results,
        "fallback": fallbacks,
        "failures": failures,
        "seconds": seconds,
        "bar": {"min_label_agreement": MIN_LABEL_AGREEMENT, "max_accuracy_drop": MAX_ACCURACY_DROP},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="fine-tuned HF model")
    parser.add_argument("--data-dir", type=Path, required=True, help="MRPC TSVs")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rows", type=int, default=None, help="first N validation/test rows")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated names")
    parser.add_argument("--calibration-rows", type=int, default=256, help="train rows")
    parser.add_argument("--selection-rows", type=int, default=512, help="other train rows")
    parser.add_argument("--selection-target", type=float, default=0.997)
    parser.add_argument("--max-fallback", type=int, help="most nodes kept fp32 (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="which train rows are drawn")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over test")
    parser.add_argument("--work-dir", type=Path, help="keep the graphs here (default: temp)")
    parser.add_argument("--results", type=Path, default=RESULTS / "int8_fallback.json")
    args = parser.parse_args()
    ort.set_default_logger_severity(3)
    started = time.perf_counter()
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        record = run(args, args.work_dir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="int8-") as folder:
            record = run(args, Path(folder))
    record["wall_seconds"] = time.perf_counter() - started
    save(args.results.name, record, args.results.parent)


if __name__ == "__main__":
    main()
