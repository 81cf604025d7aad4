"""Fine-tune with the transformers `Trainer`: per-epoch evaluation, best checkpoint by the
configured objective (validation F1 by default).

Everything the Trainer does is decided by the config; nothing is reported to outside
services from here (`report_to="none"`): the caller passes callbacks that log to the run
it owns, so parallel jobs can never write into each other's MLflow runs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader, SequentialSampler
from transformers import (
    DataCollatorWithPadding,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
    set_seed,
)

from tasks import objective, stop_request
from tasks.config import FineTuneConfig
from tasks.evaluation import trainer_metrics
from tasks.frozen_features import FrozenFeatures
from tasks.machine_recipe import layers_to_freeze, use_bf16
from tasks.model import freeze_lower_layers, load_model
from tasks.tokenization import by_length

log = logging.getLogger(__name__)


FEW_TRAIN_ROWS = 1000


def few_rows_warning(rows: int, batch_size: int) -> str | None:
    """What to change when the train split is small: with few steps an epoch, a recipe can
    keep an epoch that predicts the majority class as its best (the default recipe did on
    512 MRPC rows, tests/test_true_record.py). None from `FEW_TRAIN_ROWS` rows up."""
    if rows >= FEW_TRAIN_ROWS:
        return None
    steps = math.ceil(rows / batch_size)
    return (
        f"the train split has {rows} rows ({steps} step(s) an epoch at batch {batch_size}): "
        "with few rows, the recipe may keep a majority-class epoch as its best; if the "
        "predictions are all one class, raise --num-epochs or lower --batch-size"
    )


def training_arguments(
    config: FineTuneConfig, output_dir: Path, resumable: bool = False
) -> TrainingArguments:
    """The config's recipe in `TrainingArguments` form, with evaluation and saving per epoch.

    `resumable` checkpoints keep the optimizer, scheduler and RNG states too (three times
    the model's size), so that training can go on from them after a lost worker."""
    bf16 = use_bf16(config.bf16)
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        num_train_epochs=config.num_epochs,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of all steps
        max_grad_norm=config.max_grad_norm,
        # The fused AdamW step (transformers' default) measured ~20% faster per training
        # step than `adamw_torch` on a 2-core CPU (bench/overhead.py shows the effect).
        optim="adamw_torch_fused",
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=1,
        save_only_model=not resumable,
        load_best_model_at_end=True,
        metric_for_best_model=config.objective_metric,
        greater_is_better=True,  # both objectives (accuracy, F1) grow with quality
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        report_to="none",
        disable_tqdm=False,
    )


class InOrderEvalTrainer(Trainer):
    """A Trainer whose evaluation and `predict` see the rows in the order given, and whose
    training steps start above the frozen layers when their outputs are kept.

    With `train_sampling_strategy="group_by_length"`, transformers 5 also hands evaluation
    and prediction a `LengthGroupedSampler` (random mega-batches): its metrics stay right,
    but predictions come back shuffled, and anything that maps them to rows goes wrong.
    Training keeps its grouped sampler; held-out rows are read sequentially.
    """

    frozen_features: FrozenFeatures | None = None

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or self.args.world_size > 1:
            return super()._get_eval_sampler(eval_dataset)
        return SequentialSampler(eval_dataset)

    def compute_loss(self, model, inputs, *args, **kwargs):
        kept = self.frozen_features if model.training else None  # evaluation: whole model
        features = kept.lookup(inputs) if kept is not None else None
        if features is None:
            return super().compute_loss(model, inputs, *args, **kwargs)
        with kept.upper_layers_only(features):
            return super().compute_loss(model, inputs, *args, **kwargs)


class TrainingProgress(ProgressCallback):
    """One progress bar for training and one line of metrics per epoch.

    transformers' own callback also draws a bar for every evaluation and prints each raw
    log dictionary; on a terminal they break up the training bar.
    """

    EPOCH_METRICS = ("eval_loss", "eval_accuracy", "eval_f1")

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar and logs):
            return
        if "eval_loss" in logs:
            losses = [row["loss"] for row in state.log_history if "loss" in row]
            parts = [f"train_loss {losses[-1]:.4f}"] if losses else []
            parts += [f"{name} {logs[name]:.4f}" for name in self.EPOCH_METRICS if name in logs]
            epoch = f"epoch {round(state.epoch or 0)}/{round(args.num_train_epochs)}"
            self.training_bar.write(f"{epoch}: " + ", ".join(parts))


class TrainerAware(TrainerCallback):
    """A callback that needs the Trainer itself (e.g. to evaluate between epochs): `train`
    hands it over once the Trainer exists."""

    trainer: Trainer | None = None


class StopWhenAsked(TrainerCallback):
    """Raise a stop that a signal asked for again at the next training or prediction step,
    where the first one was lost (`tasks/stop_request.py`)."""

    def on_step_end(self, args, state, control, **kwargs):
        if stop_request.requested:
            raise KeyboardInterrupt(f"{stop_request.requested}, raised again")

    on_prediction_step = on_step_end


# The settings that make a training recipe, as a run's description and its model card state
# it (with what training decided, `TrainResult.decided`).
RECIPE = (
    "model_name_or_path", "learning_rate", "batch_size", "num_epochs", "weight_decay",
    "warmup_ratio", "seed", "max_length", "objective_metric", "positive_label", "bf16",
    "group_by_length",
)  # fmt: skip


@dataclass
class TrainResult:
    """The trained Trainer (best checkpoint loaded) and what training measured."""

    trainer: Trainer
    history: list[dict]
    train_seconds: float  # the frozen layers' one pass and `Trainer.train`
    train_samples_per_second: float  # training rows x epochs trained / train_seconds
    bf16: bool
    frozen_layers: int
    frozen_features_cached: bool

    @property
    def decided(self) -> dict[str, bool | int]:
        """What training settled from 'auto' settings and the machine: recorded as params."""
        return {
            "bf16_active": self.bf16,
            "frozen_layers": self.frozen_layers,
            "frozen_features_cached": self.frozen_features_cached,
        }

    def recipe(self, config: FineTuneConfig) -> dict[str, object]:
        """The recipe this training ran: the config's RECIPE settings and what it decided."""
        return {name: getattr(config, name) for name in RECIPE} | self.decided


def train(
    config: FineTuneConfig,
    model_path: str,
    tokenizer,
    datasets: DatasetDict,
    label_names: list[str],
    output_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
    resumable: bool = False,
    resume_from_checkpoint: str | None = None,
) -> TrainResult:
    """Fine-tune on `train`, evaluate on `validation` each epoch, keep the best epoch;
    continue from `resume_from_checkpoint` (written with `resumable`) when given."""
    config = objective.resolve_objective(config, label_names)  # the flows resolved it already
    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    model = load_model(model_path, label_names)
    args = training_arguments(config, output_dir, resumable)
    frozen = layers_to_freeze(config.freeze_layers, args.bf16, model)
    freeze_lower_layers(model, frozen)
    columns = ["input_ids", "attention_mask", "token_type_ids", "label"]
    train_set, eval_set = (
        datasets[split].select_columns([c for c in columns if c in datasets[split].column_names])
        for split in ("train", "validation")
    )
    eval_set, _ = by_length(eval_set)  # same metrics, less padding
    trainer = InOrderEvalTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=trainer_metrics(objective.scoring(config, label_names)),
        callbacks=callbacks or [],
    )
    for callback in callbacks or []:
        if isinstance(callback, TrainerAware):
            callback.trainer = trainer
    trainer.add_callback(StopWhenAsked)
    if not args.disable_tqdm:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(TrainingProgress)
    log.info(
        "training %d examples for %d epoch(s), lr %g, batch %d, bf16 %s, %d layer(s) frozen",
        len(train_set),
        config.num_epochs,
        config.learning_rate,
        config.batch_size,
        args.bf16,
        frozen,
    )
    start = time.perf_counter()  # the frozen layers' one pass is part of training
    if config.cache_frozen_features and frozen:  # no sort to pay for when nothing is frozen
        trainer.frozen_features = frozen_features(trainer, frozen)
    cached = trainer.frozen_features is not None
    # read before training: the Trainer deletes the checkpoint it resumed from once it saves
    started_epoch = checkpoint_epoch(resume_from_checkpoint)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - start
    trainer.frozen_features = None  # its memory back before evaluation and logging
    # the Trainer's own samples/s leaves out the frozen layers' pass: counted here over the
    # same span as `train_seconds`, for the epochs this call trained
    epochs = (trainer.state.epoch or 0) - started_epoch
    return TrainResult(
        trainer=trainer,
        history=list(trainer.state.log_history),
        train_seconds=seconds,
        train_samples_per_second=len(train_set) * epochs / seconds,
        bf16=args.bf16,
        frozen_layers=frozen,
        frozen_features_cached=cached,
    )


def checkpoint_epoch(checkpoint: str | None) -> float:
    """The epoch a checkpoint was saved at (0 without one): where a resumed run starts."""
    if checkpoint is None:
        return 0.0
    return TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json")).epoch or 0.0


def frozen_features(trainer: Trainer, frozen: int) -> FrozenFeatures | None:
    """The frozen layers' outputs for the training rows, run in length order."""
    train_set, _ = by_length(trainer.train_dataset)
    size = trainer.args.per_device_eval_batch_size
    batches = DataLoader(train_set, batch_size=size, collate_fn=trainer.data_collator)
    tokens = sum(len(ids) for ids in train_set["input_ids"])
    return FrozenFeatures.for_training(trainer.model, frozen, batches, tokens, trainer.args.bf16)
