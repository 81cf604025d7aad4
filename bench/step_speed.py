"""Benchmark: training-step speed of the ideas for faster fine-tuning, one process, side by side.

Each variant trains a fresh copy of the packaged model for `--steps` steps (after `--warmup`
steps, which a compiled variant spends compiling) on MRPC train rows in length-grouped
batches (sorted by length, batch order shuffled: what `group_by_length` does), with fused
AdamW, and prints train samples/s and the share of forward, backward and optimizer time.
Speed only: whether a recipe change keeps its accuracy is `bench/speedup.py`'s question.

    .venv/bin/python -m bench.step_speed --data-dir ../shared/data/mrpc
    .venv/bin/python -m bench.step_speed --data-dir ../shared/data/mrpc --bf16 off \\
        --variant "batch 32 (default)" --variant "batch 32, 2 layers frozen"
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from bench import report
from bench.common import RESULTS, save
from tasks.config import PACKAGED_MODEL
from tasks.machine_recipe import use_bf16
from tasks.model import freeze_lower_layers, resolve_model

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@dataclass
class Variant:
    batch_size: int
    bf16: bool | None = None  # None: as `--bf16` resolves
    compile: bool = False
    model_kwargs: dict = field(default_factory=dict)
    freeze_embeddings: bool = False
    frozen_layers: int = 0


VARIANTS = {
    "batch 8 (seed)": Variant(8),
    "batch 16": Variant(16),
    "batch 32 (default)": Variant(32),
    "batch 64": Variant(64),
    "batch 32, torch.compile": Variant(32, compile=True),
    "batch 32, eager attention": Variant(32, model_kwargs={"attn_implementation": "eager"}),
    "batch 32, no dropout": Variant(32, model_kwargs=NO_DROPOUT),
    "batch 32, word embeddings frozen": Variant(32, freeze_embeddings=True),
    "batch 8, 2 layers frozen": Variant(8, frozen_layers=2),
    "batch 16, 2 layers frozen": Variant(16, frozen_layers=2),
    "batch 32, 2 layers frozen": Variant(32, frozen_layers=2),
    "batch 64, 2 layers frozen": Variant(64, frozen_layers=2),
    "batch 32, 3 layers frozen": Variant(32, frozen_layers=3),
    # bf16 autocast whatever the CPU: where it is not native, this measures its emulation
    "batch 32, bf16 autocast": Variant(32, bf16=True),
}


def batches(data_dir: Path, model: str, rows: int, size: int, multiple: int | None) -> list:
    frame = pd.read_csv(data_dir / "train.tsv", sep="\t", quoting=3).head(rows)
    tokenizer = AutoTokenizer.from_pretrained(model)
    encoded = tokenizer(list(frame.sentence1), list(frame.sentence2), truncation=True)
    examples = [
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": label}
        for ids, mask, types, label in zip(
            encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"],
            frame.label, strict=True,
        )
    ]  # fmt: skip
    examples.sort(key=lambda example: len(example["input_ids"]))
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)
    grouped = [collate(examples[i : i + size]) for i in range(0, len(examples), size)]
    random.Random(0).shuffle(grouped)
    return grouped


def measure(variant: Variant, data, model_path: str, warmup: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=2, **variant.model_kwargs
    )
    if variant.freeze_embeddings:
        model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    freeze_lower_layers(model, variant.frozen_layers)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    model.train()
    step_model = torch.compile(model, dynamic=True) if variant.compile else model
    seconds = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    samples, started, warmup_seconds = 0, time.perf_counter(), 0.0
    for index in range(warmup + steps):
        batch = data[index % len(data)]
        if index == warmup:
            warmup_seconds = time.perf_counter() - started
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.bf16):
            loss = step_model(**batch).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        t3 = time.perf_counter()
        if index >= warmup:
            seconds["forward"] += t1 - t0
            seconds["backward"] += t2 - t1
            seconds["optimizer"] += t3 - t2
            samples += len(batch["input_ids"])
    total = sum(seconds.values())
    return {
        "samples_per_second": samples / total,
        "warmup_seconds": warmup_seconds,
        **{f"{part}_share": value / total for part, value in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1600, help="first N train rows")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="(default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    model = resolve_model(PACKAGED_MODEL)
    bf16 = use_bf16(args.bf16)  # "auto": as the flow decides on this machine
    names = args.variant or list(VARIANTS)
    measured = {}
    for name in names:
        variant = VARIANTS[name]
        if variant.bf16 is None:
            variant = replace(variant, bf16=bf16)
        multiple = 16 if variant.compile else None  # bucketed shapes: fewer recompiles
        data = batches(args.data_dir, model, args.rows, variant.batch_size, multiple)
        measured[name] = measure(variant, data, model, args.warmup, args.steps)
        measured[name]["bf16"] = variant.bf16
        print(f"{name}: {measured[name]['samples_per_second']:.1f} samples/s", flush=True)
    settings = {"rows": args.rows, "warmup": args.warmup, "steps": args.steps, "bf16": bf16}
    settings["kernels"] = torch.backends.cpu.get_cpu_capability()  # ATEN_CPU_CAPABILITY caps it
    results = {"settings": settings, "variants": measured}
    print("\n".join(report.step_speed(results)))
    save("step_speed.json", results, args.results)


if __name__ == "__main__":
    main()
