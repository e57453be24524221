"""Optimizer, learning-rate schedule, loss and metrics of the papers' recipe,
all from Keras (AdamW, CosineDecay with warm-up, label smoothing)."""

import keras


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


def make_optimizer(schedule, weight_decay=0.05):
    """AdamW on every weight, like the official code (torch AdamW on
    `model.parameters()`)."""
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)


def make_loss(label_smoothing=0.1):
    """Cross-entropy on (possibly mixed) one-hot labels."""
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)


def make_metrics(num_classes):
    return [
        keras.metrics.CategoricalAccuracy(name="top1"),
        keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
    ]


def model_overrides_for(config, entry):
    """`create_model` arguments from a `TrainConfig`: stochastic depth and
    SATA's own learning rate (`s = c * u` with `c = sata_lr / lr`, so Adam
    moves `s` at `sata_lr`) and threshold, when the model uses SATA."""
    overrides = {}
    if entry.stochastic_depth:
        overrides["drop_path_rate"] = config.drop_path_rate
    techniques = entry.techniques if config.techniques is None else config.techniques
    suppression = {}
    if "sata" in techniques:
        if config.sata_lr is not None:
            suppression["scale_lr_multiplier"] = config.sata_lr / (config.lr or entry.paper_lr)
        if config.sata_threshold is not None:
            suppression["threshold"] = config.sata_threshold
    if suppression:
        overrides["suppression"] = suppression
    overrides.update(config.model_overrides)
    return overrides
