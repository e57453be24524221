"""Optimizer, learning-rate schedule, loss and metrics of the papers' recipe:
AdamW with per-variable learning-rate multipliers (SATA's own rate), Keras's
CosineDecay with warm-up, label smoothing."""

import keras

from keras_smallvit.layers.suppression import SCALE_NAME
from keras_smallvit.optimizers import MultiRateAdamW


def learning_rate_schedule(lr, steps_per_epoch, epochs, warmup_epochs, warmup_start_lr=1e-6, min_lr=1e-6):
    """Per-step linear warm-up from `warmup_start_lr` to `lr` over
    `warmup_epochs`, then cosine decay to `min_lr` at the last step.

    `CosineDecay`'s warm-up is linear from `initial_learning_rate` to
    `warmup_target`; its cosine ends at `alpha * warmup_target`.
    """
    total_steps = steps_per_epoch * epochs
    warmup_steps = steps_per_epoch * warmup_epochs
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=warmup_start_lr if warmup_steps else lr,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=min_lr / lr,
        warmup_target=lr if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(schedule, weight_decay=0.05, learning_rate_multipliers=None):
    """AdamW on every weight, like the official code (torch AdamW on
    `model.parameters()`), with the named variables at their own rate
    (`MultiRateAdamW`; SATA's scales: see `sata_learning_rate_multipliers`)."""
    return MultiRateAdamW(
        learning_rate=schedule, weight_decay=weight_decay, learning_rate_multipliers=learning_rate_multipliers
    )


def make_loss(label_smoothing=0.1):
    """Cross-entropy on (possibly mixed) one-hot labels."""
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)


def make_metrics(num_classes):
    """Top-1, and top-5 when there are more than 5 classes (it is 1 otherwise)."""
    metrics = [keras.metrics.CategoricalAccuracy(name="top1")]
    if num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    return metrics


def _techniques(config, entry):
    return entry.techniques if config.techniques is None else config.techniques


def model_overrides_for(config, entry):
    """`create_model` arguments from a `TrainConfig`: stochastic depth and
    SATA's threshold, when the model uses SATA. (SATA's own learning rate is
    the optimizer's: `sata_learning_rate_multipliers`.)"""
    overrides = {}
    if entry.stochastic_depth:
        overrides["drop_path_rate"] = config.drop_path_rate
    if "sata" in _techniques(config, entry) and config.sata_threshold is not None:
        overrides["suppression"] = {"threshold": config.sata_threshold}
    overrides.update(config.model_overrides)
    return overrides


def sata_learning_rate_multipliers(config, entry):
    """`{"sata_scale": sata_lr / lr}` (the optimizer's
    `learning_rate_multipliers`) when the model uses SATA and `sata_lr` is
    set, else `{}`; `lr` is `config.lr` or the registry's paper rate."""
    if "sata" not in _techniques(config, entry) or config.sata_lr is None:
        return {}
    return {SCALE_NAME: config.sata_lr / (config.lr or entry.paper_lr)}
