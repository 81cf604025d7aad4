"""What a fine-tune returns, and its human-readable forms: the Prefect artifact, the console
summary and the MLflow run's description."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.evaluation import score_text
from tasks.onnx_export import OnnxExport
from tasks.registry import Decision


@dataclass
class FineTuneResult:
    """The outcome of one fine-tune: where it is recorded and how it scored."""

    run_id: str
    run_name: str
    experiment: str
    tracking_uri: str
    model: str
    data_fingerprint: str
    metrics: dict[str, dict[str, float]]  # split -> accuracy, f1, loss (labelled splits)
    timings: dict[str, float]
    bf16: bool
    tokenize_cache_hit: bool
    model_uri: str | None = None
    decision: Decision | None = None
    onnx: OnnxExport | None = None
    recipe: dict[str, object] = field(default_factory=dict)
    # the logged model's labels on the validation rows (fp32, through mlflow.pyfunc), where
    # publishing scored them: a later promotion of this model reuses them
    holdout_labels: np.ndarray | None = None

    def markdown(self) -> str:
        """Where to find the run and how it scored (Prefect artifact `fine-tune-summary`)."""
        timings = self.timings
        return "\n".join(
            [
                "# Fine-tune result",
                "",
                f"- MLflow run: `{self.run_id}` ({self.run_name}; experiment `{self.experiment}`,"
                f" tracking `{self.tracking_uri}`)",
                f"- model: `{self.model}`; data fingerprint `{self.data_fingerprint[:12]}`",
                f"- training: {timings['train_seconds']:.1f} s, "
                f"{timings['train_samples_per_second']:.1f} samples/s, bf16 {self.bf16}",
                f"- tokenization: {timings['tokenize_seconds']:.2f} s "
                f"(cache {'hit' if self.tokenize_cache_hit else 'miss'})",
                f"- logged model: `{self.model_uri or 'not logged'}`",
                *([f"- {self.onnx.describe()}"] if self.onnx else []),
                *([f"- registry: {self.decision.describe()}"] if self.decision else []),
                "",
                metrics_table(self.metrics),
            ]
        )

    def description(self, data_summary: dict[str, dict[str, int]]) -> str:
        """The MLflow run's description: data, recipe, scores."""
        rows = ", ".join(f"{split} {counts['rows']}" for split, counts in data_summary.items())
        recipe = ", ".join(f"{key} {value}" for key, value in self.recipe.items())
        return "\n".join(
            [
                f"Fine-tune of `{self.model}` on {rows} rows "
                f"(data fingerprint `{self.data_fingerprint[:12]}`).",
                "",
                f"Recipe: {recipe}.",
                "",
                metrics_table(self.metrics),
                *(["", self.onnx.describe()] if self.onnx else []),
                *(["", self.decision.describe()] if self.decision else []),
            ]
        )


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table with one row per split and one column per metric, each figure with
    its 95% bootstrap interval over the split's rows."""
    names = sorted({name for values in metrics.values() for name in values if "_ci_" not in name})
    lines = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split, values in metrics.items():
        cells = [score_text(values, name) if name in values else "" for name in names]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    lines += ["", "Brackets: 95% bootstrap interval over the split's rows (2,000 resamples)."]
    return "\n".join(lines)
