"""Human-readable summaries of a run, for Prefect artifacts and the console."""

from __future__ import annotations


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table with one row per split and one column per metric."""
    names = sorted({name for values in metrics.values() for name in values})
    lines = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split, values in metrics.items():
        cells = [f"{values[name]:.4f}" if name in values else "" for name in names]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_summary_markdown(summary: dict) -> str:
    """The fine-tune flow's result as markdown: where to find the run and how it scored."""
    return "\n".join(
        [
            "# Fine-tune result",
            "",
            f"- MLflow run: `{summary['run_id']}` (experiment `{summary['experiment']}`, "
            f"tracking `{summary['tracking_uri']}`)",
            f"- model: `{summary['model']}`; data fingerprint `{summary['data_fingerprint'][:12]}`",
            f"- training: {summary['train_seconds']:.1f} s, "
            f"{summary['train_samples_per_second']:.1f} samples/s, bf16 {summary['bf16']}",
            f"- tokenization: {summary['tokenize_seconds']:.2f} s "
            f"(cache {'hit' if summary['tokenize_cache_hit'] else 'miss'})",
            f"- logged model: `{summary.get('model_uri') or 'not logged'}`",
            "",
            metrics_table(summary["metrics"]),
        ]
    )
