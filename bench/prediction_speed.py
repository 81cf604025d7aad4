"""Prediction speed: the logged model (what `predict` and every promotion use) against plain
forward passes of the same weights, on MRPC test, back to back on one machine.

Rows: plain forward in fp32 and in bf16 autocast (batches of 64 in length order, the
hardware's pace), the pyfunc model as logged (`auto`: bf16 where native) and forced to
fp32, and the transformers flavour's text-classification pipeline that was logged before.
Prints rows/s, the pyfunc's share of the plain forward's rows/s, and label agreement (the
pyfunc in fp32 must give exactly the plain fp32 labels). The weights are the packaged
MiniLM with a seeded classification head: speed does not depend on training, and the
labels still vary from row to row.
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
from tasks import tracking
from tasks.config import PACKAGED_MODEL
from tasks.model import load_model, resolve_model
from tasks.train import use_bf16

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the logged model runs too


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=None, help="first N test rows (all: 1725)")
    args = parser.parse_args()
    raw = pd.read_csv(args.data_dir / "test.tsv", sep="\t", quoting=3, dtype=str)
    raw = raw.head(args.rows) if args.rows else raw
    frame = pd.DataFrame({"text": raw["sentence1"], "text_pair": raw["sentence2"]})
    rows = len(frame)
    set_seed(0)
    path = resolve_model(PACKAGED_MODEL)
    model = load_model(path, ["0", "1"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    bf16 = use_bf16("auto")  # what the logged model decides for itself, in its own code

    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        client = tracking.connect(uri)
        with tracking.tracked_run(client, "bench-prediction") as run_id:
            example = frame.iloc[0].to_dict()
            logged = tracking.log_classifier_model(
                client, run_id, model, tokenizer, example, "# bench", 128
            )
            pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
            from transformers import pipeline

            classifier = pipeline("text-classification", model=model, tokenizer=tokenizer)
        model.to(DEVICE)

        measured: dict[str, dict] = {}
        speed, fp32_labels = timed(lambda: plain_forward(model, tokenizer, frame, False), rows)
        measured["plain forward fp32"] = {"rows_per_second": speed}
        if bf16:
            speed, bf16_labels = timed(lambda: plain_forward(model, tokenizer, frame, True), rows)
            measured["plain forward bf16"] = {"rows_per_second": speed}
        for name, params in (("pyfunc auto", {}), ("pyfunc fp32", {"precision": "fp32"})):
            speed, output = timed(lambda params=params: pyfunc.predict(frame, params=params), rows)
            labels = output["label"].astype(int).to_numpy()
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

    best_plain = max(v["rows_per_second"] for k, v in measured.items() if k.startswith("plain"))
    print(f"{rows} rows of MRPC test, bf16 native: {bf16}")
    for name, values in measured.items():
        share = values["rows_per_second"] / best_plain
        agree = values.get("labels_equal_plain")
        agreement = f", labels equal to plain: {agree}/{rows}" if agree is not None else ""
        print(f"  {name:40s} {values['rows_per_second']:8.1f} rows/s ({share:.0%}){agreement}")
    save("prediction_speed.json", {"rows": rows, "bf16_native": bf16, "measured": measured})


if __name__ == "__main__":
    main()
