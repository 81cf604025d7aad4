"""Write bench/RESULTS.md from the recorded runs in bench/recorded/<date>-<machine>/.

Every figure in the document is read from a JSON file a benchmark wrote; nothing is typed
in. Record a run by copying its bench/results/*.json (and logs) into a new folder there.

    .venv/bin/python -m bench.report
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RECORDED = HERE / "recorded"
DOCUMENT = HERE / "RESULTS.md"
METRICS = ("validation_accuracy", "validation_f1", "test_accuracy", "test_f1")


def search_pruning(data: dict) -> list[str]:
    studies = data["studies"]
    baseline = studies[-1]
    lines = [
        f"### Search: {data['n_trials']} trials with and without pruning"
        + (" (studies run at the same time)" if data.get("parallel") else ""),
        "",
        "| pruner | best validation F1 | Δ F1 vs none (points) | epochs trained | "
        "epochs vs none | pruned trials | wall s | best params |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for study in studies:
        params = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in study["best_params"].items()
        )
        lines.append(
            f"| {study['pruner']} | {study['best_validation_f1']:.4f} | "
            f"{100 * (study['best_validation_f1'] - baseline['best_validation_f1']):+.2f} | "
            f"{study['epochs_trained']} | "
            f"{study['epochs_trained'] / baseline['epochs_trained']:.0%} | "
            f"{study['pruned_trials']} | {study['wall_seconds']:.0f} | {params} |"
        )
    return lines


def quality(data: dict) -> list[str]:
    recipes = data["recipes"]
    seeds = ", ".join(str(run["seed"]) for run in recipes[0]["runs"])
    lines = [
        f"### Quality: seed recipe vs tuned, mean ± std over seeds {seeds}",
        "",
        "| recipe | params | " + " | ".join(METRICS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in METRICS) + " |",
    ]
    for recipe in recipes:
        params = ", ".join(f"{k} {v:.3g}" for k, v in recipe["params"].items())
        cells = " | ".join(f"{recipe[m]['mean']:.4f} ± {recipe[m]['std']:.4f}" for m in METRICS)
        lines.append(f"| {recipe['recipe']} | {params} | {cells} |")
    lines += ["", "Tuned - seed: " + "; ".join(gaps(*recipes)) + "."]
    return [*lines, "", f"Reference: {data['reference']}."]


def gaps(seed: dict, tuned: dict) -> list[str]:
    """Each metric's difference, and whether it is larger than the seed-to-seed noise."""
    described = []
    for metric in METRICS:
        gap = tuned[metric]["mean"] - seed[metric]["mean"]
        noise = max(seed[metric]["std"], tuned[metric]["std"])
        verdict = "larger than" if abs(gap) > noise else "within"
        described.append(f"{metric} {gap:+.4f} ({verdict} the seed-to-seed std {noise:.4f})")
    return described


def overhead(data: dict) -> list[str]:
    bare, flow = data["bare"], data["flow"]
    lines = [
        f"### Overhead: fine-tune flow vs bare Trainer script, {data['settings']['num_epochs']} "
        "epoch(s) of the seed recipe on MRPC train, back to back",
        "",
        "| | wall s (whole process) | train samples/s | validation accuracy | validation F1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in (("bare Trainer", bare), ("finetrack flow", flow)):
        lines.append(
            f"| {name} | {row['wall_seconds']:.1f} | {row['train_samples_per_second']:.2f} | "
            f"{row['validation_accuracy']:.4f} | {row['validation_f1']:.4f} |"
        )
    return [
        *lines,
        "",
        f"Flow / bare wall time: {data['ratio']:.3f}. Inside the flow: training "
        f"{flow['train_seconds']:.1f} s, tokenization {flow['tokenize_seconds']:.2f} s, "
        f"model logging {flow['log_model_seconds']:.1f} s (all included in its wall time).",
    ]


def scaling(data: dict) -> list[str]:
    sizes = data["sizes"]
    full = sizes[-1]
    lines = [
        f"### Scaling: {data['epochs']} epoch at growing shares of MRPC train (cold cache)",
        "",
        "| share | train rows | train s | train s per 1k rows | tokenize s | flow wall s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in sizes:
        lines.append(
            f"| {row['fraction']:.0%} | {row['train_rows']} | {row['train_seconds']:.1f} | "
            f"{1000 * row['train_seconds'] / row['train_rows']:.1f} | "
            f"{row['tokenize_seconds']:.2f} | {row['wall_seconds']:.1f} |"
        )
    smallest = sizes[0]
    growth = full["train_seconds"] / smallest["train_seconds"]
    rows = full["train_rows"] / smallest["train_rows"]
    return [
        *lines,
        "",
        f"Training time grew by a factor {growth:.2f} for {rows:.2f} times the rows.",
    ]


def tokenization_cache(data: dict) -> list[str]:
    cases = data["cases"]
    first = cases[0]["seconds"]
    rows = ", ".join(f"{split} {n}" for split, n in data["rows"].items())
    lines = [
        f"### Tokenization cache ({rows} rows)",
        "",
        "| case | seconds | share of the first | cache |",
        "| --- | --- | --- | --- |",
    ]
    for case in cases:
        lines.append(
            f"| {case['case']} | {case['seconds']:.3f} | {case['seconds'] / first:.1%} | "
            f"{'hit' if case['cache_hit'] else 'miss'} |"
        )
    return lines


RENDERERS = {
    "overhead.json": overhead,
    "tokenization_cache.json": tokenization_cache,
    "scaling.json": scaling,
    "search_pruning.json": search_pruning,
    "quality.json": quality,
}


def render() -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench.report` from `bench/recorded/`; see `bench/README.md` for "
        "how each figure is measured.",
    ]
    for folder in sorted(p for p in RECORDED.iterdir() if p.is_dir()):
        machine = None
        sections = []
        for name, renderer in RENDERERS.items():
            path = folder / name
            if path.exists():
                data = json.loads(path.read_text())
                machine = data["machine"]
                sections += ["", *renderer(data)]
        if machine:
            described = ", ".join(f"{k} {v}" for k, v in machine.items())
            lines += ["", f"## {folder.name}", "", f"Machine and versions: {described}.", *sections]
    return "\n".join(lines) + "\n"


def main() -> None:
    DOCUMENT.write_text(render())
    print(f"wrote {DOCUMENT}")


if __name__ == "__main__":
    main()
