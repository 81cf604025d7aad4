"""What every run of a flow trains from, prepared once: the config with its objective
resolved on the data's labels, the located model, the loaded and validated data, and the
tokenized splits.

A search's trials and confirmation runs and a retrain's challenger share one `Prepared`;
each run takes it for its own config (`for_config`), which may change what is trained
(hyperparameters, seed, what is logged) but not what was prepared.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tasks import objective
from tasks.config import FineTuneConfig
from tasks.data import LoadedData
from tasks.registry import Holdout
from tasks.tokenization import Tokenized
from tasks.uncertainty import Scoring

# The settings that decide the data, the model located and the tokenized splits.
PREPARED_BY = (
    "data_dir", "hub_dataset", "text_column", "text_pair_column", "label_column",
    "label_names", "max_train_samples", "max_eval_samples", "model_name_or_path",
    "freeze_layers", "max_length", "cache_dir",
)  # fmt: skip


@dataclass(frozen=True)
class Prepared:
    """A run's inputs, checked before any MLflow run exists."""

    config: FineTuneConfig  # objective_metric and positive_label resolved on the labels
    model_path: str  # what `from_pretrained` gets
    data: LoadedData
    tokenizer: object
    tokenized: Tokenized

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    @property
    def scoring(self) -> Scoring:
        return objective.scoring(self.config, self.data.label_names)

    def holdout(self, split: str = "validation") -> Holdout:
        """The labelled rows of `split` on which logged models are scored."""
        return Holdout(self.data.splits[split], self.data.label_names, self.scoring, split)

    def inputs(self) -> dict[str, object]:
        """What a run records of its inputs beside its settings (params)."""
        return {
            "model_path": self.model_path,
            "data_source": self.data.source,
            "data_fingerprint": self.data.fingerprint,
            "num_labels": self.data.num_labels,
            "label_names": ",".join(self.data.label_names),
            "train_rows": len(self.data.splits["train"]),
            **objective.params(self.config, self.data.label_names),
        }

    def for_config(self, config: FineTuneConfig) -> Prepared:
        """The same inputs for `config`, its objective resolved; a config that would have
        prepared other inputs (PREPARED_BY) is refused."""
        differ = [
            name for name in PREPARED_BY if getattr(config, name) != getattr(self.config, name)
        ]
        if differ:
            raise ValueError(f"prepared for other settings: {', '.join(differ)}")
        return replace(self, config=objective.resolve_objective(config, self.label_names))
