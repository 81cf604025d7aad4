"""Compute the frozen lower layers once, not once an epoch.

With `freeze_layers` N, the embeddings and the first N encoder layers never change, so what
they make of a training row is the same every epoch. `FrozenFeatures` runs them once over the
training set (eval mode, no grad), keeps each row's output, and lets a training step run the
layers above only. The recipe changes in one way, recorded as the `frozen_features_cached`
param: the frozen layers' dropout is not applied (a row meets the same lower features every
epoch). Evaluation and prediction always run the whole model, so every recorded score comes
from the model as logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from tasks.model import encoder_layers

log = logging.getLogger(__name__)

MEMORY_LIMIT_BYTES = 2 * 1024**3  # beyond this the rows run through every layer each step
KEY_COLUMNS = ("input_ids", "token_type_ids")


def row_keys(batch: dict[str, torch.Tensor]) -> list[bytes]:
    """A row's identity: its token ids (and token types) where the attention mask is set."""
    mask = batch["attention_mask"].cpu().bool()
    columns = [batch[name].cpu() for name in KEY_COLUMNS if name in batch]
    return [
        b"".join(column[row][mask[row]].numpy().tobytes() for column in columns)
        for row in range(len(mask))
    ]


class FrozenFeatures:
    """The outputs of a model's frozen lower layers for the rows of a training set."""

    def __init__(self, model: nn.Module, frozen: int):
        self.model = model
        self.frozen = frozen
        self.rows: dict[bytes, torch.Tensor] = {}

    @classmethod
    def for_training(
        cls, model: nn.Module, frozen: int, batches: Iterable[dict], tokens: int, bf16: bool
    ) -> FrozenFeatures | None:
        """Run the frozen layers over `batches` once. None when nothing is frozen, when
        `tokens` tokens' hidden states would not fit in `MEMORY_LIMIT_BYTES`, or when the
        layers above, fed the kept outputs, do not score the first batch as the whole model
        does (an architecture with a step between embeddings and encoder)."""
        if frozen == 0 or encoder_layers(model) is None:
            return None
        size = tokens * model.config.hidden_size * 4
        if size > MEMORY_LIMIT_BYTES:
            log.info("frozen layers run each step: their outputs need %.1f GiB", size / 2**30)
            return None
        cache, start, first = cls(model, frozen), time.perf_counter(), None
        was_training = model.training
        model.eval()
        autocast = torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16)
        with torch.no_grad(), autocast:
            with cache._layers(slice(cache.frozen)):
                for batch in batches:
                    batch = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
                    first = first or batch
                    hidden = model.base_model(**batch).last_hidden_state.float()
                    mask = batch["attention_mask"].bool()
                    for key, row, kept in zip(row_keys(batch), hidden, mask, strict=True):
                        cache.rows[key] = row[kept].clone()
            exact = first is None or cache._scores_as_whole_model(first)
        model.train(was_training)
        if not exact:
            log.warning("frozen layers run each step: their kept outputs did not reproduce "
                        "%s's scores", type(model).__name__)  # fmt: skip
            return None
        log.info(
            "frozen layers run once: outputs of %d rows kept (%.0f MiB, %.1f s)",
            len(cache.rows), size / 2**20, time.perf_counter() - start,
        )  # fmt: skip
        return cache

    def lookup(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The batch's lower features, laid out like the batch; None if a row is not kept."""
        rows = [self.rows.get(key) for key in row_keys(batch)]
        if any(row is None for row in rows):
            return None
        mask = batch["attention_mask"].bool().to(rows[0].device)
        features = rows[0].new_zeros(*mask.shape, rows[0].shape[-1])
        for index, row in enumerate(rows):
            features[index, mask[index]] = row
        return features

    def _scores_as_whole_model(self, batch: dict[str, torch.Tensor]) -> bool:
        whole = self.model(**batch).logits.float()
        try:
            with self.upper_layers_only(self.lookup(batch)):
                upper = self.model(**batch).logits.float()
        except RuntimeError:  # e.g. a projection expecting the embeddings' own width
            return False
        return torch.allclose(upper, whole, rtol=1e-3, atol=1e-3)

    @contextmanager
    def _layers(self, kept: slice) -> Iterator[None]:
        """Inside, the encoder runs only its layers in `kept`; all of them once left."""
        encoder = self.model.base_model.encoder
        layers = encoder.layer
        encoder.layer = layers[kept]
        try:
            yield
        finally:
            encoder.layer = layers

    @contextmanager
    def upper_layers_only(self, features: torch.Tensor) -> Iterator[None]:
        """Inside, the model takes `features` for its embeddings' output and runs the layers
        above the frozen ones; its modules and weights are as before once it is left."""
        embeddings = self.model.base_model.embeddings
        embeddings.forward = lambda *args, **kwargs: features
        try:
            with self._layers(slice(self.frozen, None)):
                yield
        finally:
            del embeddings.forward
