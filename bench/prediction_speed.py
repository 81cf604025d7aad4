"""Prediction speed: the logged model (what `predict` and every promotion use) against plain
forward passes of the same weights, on MRPC test, back to back on one machine.

Rows: plain forward in fp32 and in bf16 autocast (batches of 64 in length order, the
hardware's pace), the pyfunc model as logged (`auto`: bf16 where native) and forced to
fp32, its ONNX Runtime exports (fp32 and int8, `--onnx-export`), and the transformers
flavour's text-classification pipeline that was logged before. Prints rows/s, the share of
the plain forward's rows/s, and label agreement (the pyfunc in fp32 must give exactly the
plain fp32 labels). The weights are the packaged MiniLM with a seeded classification head
(speed does not depend on training), or a fine-tuned model's with `--model-uri`: then the
ONNX exports' parity on MRPC validation and test (label agreement with the full model in
fp32, accuracy) is measured too, by the flow's own parity check.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mlflow
import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, set_seed

from bench.common import save
from tasks import onnx_export, packaging, tracking
from tasks.config import PACKAGED_MODEL
from tasks.machine_recipe import native_bf16
from tasks.model import load_model, resolve_model
from tasks.onnx_export import ONNX_REQUIREMENTS, export_onnx, serving_device
from tasks.registry import Holdout, timed_labels
from tasks.uncertainty import Scoring

DEVICE = serving_device()  # where the logged model runs too


def plain_forward(model, tokenizer, frame: pd.DataFrame, bf16: bool) -> np.ndarray:
    """Labels from batches of 64 in length order, no framework around the model."""
    encoded = tokenizer(
        list(frame["text"]), list(frame["text_pair"]), truncation=True, max_length=128
    )
    order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
    labels = np.empty(len(frame), dtype=np.int64)
    with torch.inference_mode(), torch.autocast(DEVICE, torch.bfloat16, enabled=bf16):
        for start in range(0, len(order), 64):
            rows = order[start : start + 64]
            batch = tokenizer.pad(
                [{k: v[i] for k, v in encoded.items()} for i in rows], return_tensors="pt"
            ).to(DEVICE)
            labels[rows] = model(**batch).logits.float().argmax(-1).cpu().numpy()
    return labels


def timed(function, rows: int) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    return rows / seconds, result


def labelled(data_dir: Path, split: str, rows: int | None) -> pd.DataFrame:
    raw = pd.read_csv(data_dir / f"{split}.tsv", sep="\t", quoting=3, dtype=str)
    raw = raw.head(rows) if rows else raw
    return pd.DataFrame(
        {"text": raw["sentence1"], "text_pair": raw["sentence2"], "label": raw["label"].astype(int)}
    )


def weights(model_uri: str | None):
    """The fine-tuned model behind a logged pyfunc model, or the packaged one, seeded head."""
    if model_uri:
        served = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
        return served.logits.model.float().cpu().eval(), served.tokenizer
    set_seed(0)
    path = resolve_model(PACKAGED_MODEL)
    return load_model(path, ["0", "1"]).eval(), AutoTokenizer.from_pretrained(path)


def log_models(client, model, tokenizer, example: dict) -> dict[str, str]:
    """The full model and both ONNX exports, logged as the flow logs them."""
    uris = {}
    package = packaging.ModelPackage(model, tokenizer, example, "# bench", 128)
    with tracking.tracked_run(client, "bench-prediction") as run_id:
        run = packaging.Destination(run_id, tracking.experiment_id(client, "bench-prediction"))
        uris["pyfunc"] = packaging.log_classifier_model(client, run, package).model_uri
        for precision in ("fp32", "int8"):
            with tempfile.TemporaryDirectory() as folder:
                exported = export_onnx(model, tokenizer, Path(folder), precision)
                uris[f"onnx {precision}"] = packaging.log_pyfunc_model(
                    client,
                    run,
                    f"onnx_{precision}",
                    {"onnx": str(exported)},
                    package,
                    ONNX_REQUIREMENTS,
                ).model_uri
    return uris


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=None, help="first N test rows (all: 1725)")
    parser.add_argument("--model-uri", help="a fine-tuned logged model (default: packaged)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="of --model-uri")
    args = parser.parse_args()
    frame = labelled(args.data_dir, "test", args.rows)
    inputs = frame[["text", "text_pair"]]
    rows = len(frame)
    mlflow.set_tracking_uri(args.tracking_uri)
    model, tokenizer = weights(args.model_uri)
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    bf16 = native_bf16()  # what the logged model decides for itself, in its own code

    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        client = tracking.connect(uri)
        uris = log_models(client, model, tokenizer, inputs.iloc[0].to_dict())
        pyfunc = mlflow.pyfunc.load_model(uris["pyfunc"])
        from transformers import pipeline

        classifier = pipeline("text-classification", model=model, tokenizer=tokenizer)
        model.to(DEVICE)

        measured: dict[str, dict] = {}
        speed, fp32_labels = timed(lambda: plain_forward(model, tokenizer, frame, False), rows)
        measured["plain forward fp32"] = {"rows_per_second": speed}
        if bf16:
            speed, bf16_labels = timed(lambda: plain_forward(model, tokenizer, frame, True), rows)
            measured["plain forward bf16"] = {"rows_per_second": speed}
        served = {
            "pyfunc auto": (pyfunc, {}),
            "pyfunc fp32": (pyfunc, {"precision": "fp32"}),
            **{
                f"pyfunc {name} (ONNX Runtime)": (mlflow.pyfunc.load_model(uris[name]), {})
                for name in ("onnx fp32", "onnx int8")
            },
        }
        for name, (served_model, params) in served.items():
            speed, output = timed(
                lambda m=served_model, p=params: m.predict(inputs, params=p), rows
            )
            labels = np.array([label_names.index(str(label)) for label in output["label"]])
            reference = bf16_labels if bf16 and name == "pyfunc auto" else fp32_labels
            measured[name] = {
                "rows_per_second": speed,
                "labels_equal_plain": int((labels == reference).sum()),
            }
        pairs = [
            {"text": t, "text_pair": p}
            for t, p in zip(frame["text"], frame["text_pair"], strict=True)
        ]
        speed, _ = timed(lambda: classifier(pairs, truncation=True, max_length=128), rows)
        measured["transformers pipeline (the flavour's)"] = {"rows_per_second": speed}
        parity = {}
        if args.model_uri:  # a trained model: is each export fit to serve?
            for split, data in (("validation", labelled(args.data_dir, "validation", None)),
                                ("test", frame)):  # fmt: skip
                holdout = Holdout(data, label_names, Scoring(len(label_names), 1), split)
                full, seconds = timed_labels(uris["pyfunc"], data, label_names)
                for name in ("onnx fp32", "onnx int8"):
                    parity[f"{name} {split}"] = onnx_export.parity(
                        full, seconds, uris[name], holdout
                    )

    best_plain = max(v["rows_per_second"] for k, v in measured.items() if k.startswith("plain"))
    print(f"{rows} rows of MRPC test, bf16 native: {bf16}, model: {args.model_uri or 'packaged'}")
    for name, values in measured.items():
        share = values["rows_per_second"] / best_plain
        agree = values.get("labels_equal_plain")
        agreement = (
            f", labels equal to plain fp32/auto: {agree}/{rows}" if agree is not None else ""
        )
        print(f"  {name:40s} {values['rows_per_second']:8.1f} rows/s ({share:.0%}){agreement}")
    for name, values in parity.items():
        accuracy = next(v for k, v in values.items() if k.endswith("_accuracy"))
        print(
            f"  parity {name:22s} labels agree {values['onnx_label_agreement']:.2%}, "
            f"accuracy {accuracy:.4f} ({values['onnx_accuracy_drop'] * 100:+.2f} points below "
            f"full fp32), fit to serve: {onnx_export.passes(values)}"
        )
    save(
        "prediction_speed.json",
        {
            "rows": rows,
            "bf16_native": bf16,
            "model": args.model_uri or "packaged, seeded head",
            "measured": measured,
            "parity": parity,
        },
    )


if __name__ == "__main__":
    main()
