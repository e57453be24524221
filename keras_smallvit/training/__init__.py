"""Training helpers for `model.fit`: the papers' recipe as reusable parts.

    from keras_smallvit import training
    config = training.TrainConfig(model="sl_vit", dataset="cifar100")
    metrics = training.train(config)          # the whole run, resumable

or piece by piece for a script of your own:

    train_data = training.load_split(config, "train")   # or load_run_splits(config)
    model, entry = training.build_model(config, train_data.num_classes, 32)
    steps = training.steps_per_epoch(len(train_data), config)
    training.compile_model(model, config, entry, steps, train_data.num_classes)
    model.fit(training.train_dataset(train_data, config), epochs=config.epochs,
              steps_per_epoch=steps, callbacks=[training.RunFolder("runs/x")])
"""

import importlib

# Imported on first use (PEP 562): `from keras_smallvit.training import
# TrainConfig` (every training config) stays free of Keras and TensorFlow.
# None of these modules registers a Keras class but `device_augmentation`
# (its wrapper, on first use; `import keras_smallvit` registers the models
# and optimizers, `keras_smallvit.aal` its own).
_EXPORTS = {
    "RunFolder": "callbacks",
    "StopOnDivergence": "callbacks",
    "TrainingDiverged": "callbacks",
    "replace_atomically": "callbacks",
    "TrainConfig": "config",
    "apply_overrides": "config",
    "smoke": "config",
    "DeviceBatchAugmentation": "device_augmentation",
    "MultiRateAdamW": "optimization",
    "learning_rate_schedule": "optimization",
    "make_loss": "optimization",
    "make_metrics": "optimization",
    "make_optimizer": "optimization",
    "sata_learning_rate_multipliers": "optimization",
    "UnreadableImagesError": "pipeline",
    "eval_dataset": "pipeline",
    "hold_out_validation": "pipeline",
    "load_run_splits": "pipeline",
    "load_split": "pipeline",
    "resolve_data_settings": "pipeline",
    "resolve_image_size": "pipeline",
    "steps_per_epoch": "pipeline",
    "train_dataset": "pipeline",
    "build_model": "runner",
    "compile_model": "runner",
    "export_model": "runner",
    "train": "runner",
}
# Submodules reachable as attributes, as when this package imported them all.
_SUBMODULES = ("autoaugment", "callbacks", "config", "device_augmentation", "distribute", "optimization", "pipeline", "run_guard", "runner", "streaming")

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # once
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
