"""`train(config)`: one linear training run (big_vision style), resumable.

    data -> model -> compile (AdamW, warm-up + cosine, label smoothing)
    -> restore the last backup if any -> model.fit -> evaluate -> metrics.json
    -> export

With `config.aal` or `config.distillation`, the model is fit inside an AAL
or logit distiller (a teacher trained first if needed); with
`config.batch_augmentation="device"`, inside `DeviceBatchAugmentation`
(normalisation, erasing and mixing in the train step). Checkpoints and the export hold the classifier only.
"""

import dataclasses
import json
import os

import keras

from keras_smallvit import data as datasets
from keras_smallvit.aal import recipe as aal_recipe
from keras_smallvit.export import export_for_serving
from keras_smallvit.models import create_model
from keras_smallvit.models.preset_folder import run_preprocessing
from keras_smallvit.models.registry import get_model_entry
from keras_smallvit.training import pipeline
from keras_smallvit.training import run_guard
from keras_smallvit.training.callbacks import EpochTimeEstimate
from keras_smallvit.training.callbacks import RunFolder
from keras_smallvit.training.callbacks import StopOnDivergence
from keras_smallvit.training.callbacks import write_text_atomically
from keras_smallvit.training.device_augmentation import DeviceBatchAugmentation
from keras_smallvit.training.distribute import data_parallel_scope
from keras_smallvit.training.optimization import learning_rate_schedule
from keras_smallvit.training.optimization import make_loss
from keras_smallvit.training.optimization import make_metrics
from keras_smallvit.training.optimization import make_optimizer
from keras_smallvit.training.optimization import model_overrides_for
from keras_smallvit.utils.files import WriteError

RESUME_AFTER_DISK_FULL = (
    "The run folder keeps its last finished epoch: after freeing space, the same command resumes "
    "the run, with the result of an uninterrupted one."
)


def resolve_jit_compile(jit_compile):
    """"auto" -> XLA on TensorFlow/JAX; off on torch (torch.compile is opt-in)."""
    if jit_compile == "auto":
        return keras.backend.backend() in ("tensorflow", "jax")
    return bool(jit_compile)


def build_model(config, num_classes, image_size):
    """The compiled-ready model of `config` and its registry entry."""
    entry = get_model_entry(config.model)
    model = create_model(
        config.model,
        num_classes=num_classes,
        image_size=image_size,
        techniques=config.techniques,
        **model_overrides_for(config, entry),
    )
    return model, entry


def compile_model(model, config, entry, steps_per_epoch, num_classes):
    from keras_smallvit.training.optimization import sata_learning_rate_multipliers

    lr = config.lr or entry.paper_lr
    schedule = learning_rate_schedule(
        lr, steps_per_epoch, config.epochs, config.resolved_warmup_epochs(), config.warmup_start_lr, config.min_lr
    )
    model.compile(
        optimizer=make_optimizer(schedule, config.weight_decay, sata_learning_rate_multipliers(config, entry)),
        loss=make_loss(config.label_smoothing),
        metrics=make_metrics(num_classes),
        jit_compile=resolve_jit_compile(config.jit_compile),
    )
    return model


def diagnostics_callbacks(config, model, test_data):
    """`[AttentionDiagnostics]` on the first `diagnostics_images` test images
    when `config.diagnostics` (else `[]`); `model` is the student under AAL."""
    if not config.diagnostics:
        return []
    from keras_smallvit.diagnostics import AttentionDiagnostics

    images = pipeline.preprocess_eval_images(test_data.head_images(config.diagnostics_images), config)
    log_dir = os.path.join(config.workdir, "tensorboard", "diagnostics")
    return [AttentionDiagnostics(images, log_dir=log_dir, run_dir=config.workdir, model=model)]


def export_model(model, workdir):
    """`<workdir>/saved_model` for serving, on every backend (torch through a
    TensorFlow subprocess): uint8 images of any size -> probabilities and the
    top classes, with the model's preprocessing and class names inside (see
    `keras_smallvit.export_for_serving`). Written then renamed; returns its
    path."""
    return export_for_serving(model, os.path.join(workdir, "saved_model"), "saved_model")


def train(config, verbose="auto", restart=False):
    """Runs (or resumes) `config` in `config.workdir`; returns the metrics dict
    that is also written to `metrics.json`.

    Nothing is written before every check has passed: the config, the data
    (loaded first; every unreadable image named), the batch against the
    data, the run folder (`run_guard.check_resumable`: a folder holding a
    run with other settings, or foreign files, is refused) and the model
    (built before `config.json` is written). `restart=True` discards the
    folder's previous run (exactly the files it wrote: `run_guard.clear_run_folder`) and starts over. One training
    per folder at a time (`run_guard.RunLock`). An `OSError` of a write is
    raised as a `WriteError` naming the path and the free space (and, for a
    full disk, that the same command resumes the run).

    The best epoch (`best.keras`) is chosen on the validation split and the
    test split is evaluated at the end, where the data has both
    (`keras_smallvit.data.evaluation_splits`); else one held-out split does both.
    """
    config = pipeline.resolve_image_size(config.validate())
    # What the config leaves to the epochs, recorded as used.
    config = dataclasses.replace(config, warmup_epochs=config.resolved_warmup_epochs())
    selection, report = datasets.evaluation_splits(config.dataset, config.validation_split, config.data_dir)
    splits = pipeline.load_run_splits(config)
    check_splits_agree(config, splits)
    train_data = splits["train"]
    # Statistics and policy the config leaves to the data, recorded as used.
    config = fit_batch_to_data(pipeline.resolve_data_settings(config, train_data), len(train_data))
    pipeline.steps_per_epoch(len(train_data), config)  # raises before anything is written
    workdir = config.workdir
    if not restart:
        run_guard.check_resumable(config, workdir)
    if selection == report:
        print(f"best.keras: the epoch of best top-1 on the {selection} split (the only held-out split, "
              "also evaluated at the end)")
    else:
        print(f"best.keras: the epoch of best top-1 on the {selection} split; the {report} split is "
              "evaluated at the end")
    created = not os.path.exists(workdir)
    os.makedirs(workdir, exist_ok=True)
    try:
        with run_guard.RunLock(workdir):
            if restart:
                run_guard.clear_run_folder(workdir)
            elif run_guard.check_resumable(config, workdir):  # again, now that the folder is ours
                run_guard.adopt_older_run(workdir)
            try:
                return _train_in_folder(config, train_data, (selection, splits[selection]), (report, splits[report]),
                                        verbose)
            except WriteError as error:
                if error.disk_full and RESUME_AFTER_DISK_FULL not in error.message:
                    error.message += " " + RESUME_AFTER_DISK_FULL
                raise
    except BaseException:
        if created and set(os.listdir(workdir)) == {run_guard.LOCK_FILE}:
            # A run that failed before writing anything leaves no folder behind.
            os.remove(os.path.join(workdir, run_guard.LOCK_FILE))
            os.rmdir(workdir)
        raise


def fit_batch_to_data(config, num_train):
    """`config` with `batch_size` reduced to the training images of one
    epoch when it is larger (said in one line), so that small data trains."""
    images = num_train * config.repeated_augmentation
    if config.batch_size <= images:
        return config
    print(f"batch_size {config.batch_size} is larger than the {images:,} training images of an epoch: "
          f"using batch_size {images}")
    return dataclasses.replace(config, batch_size=images)


def check_splits_agree(config, splits):
    """Fails before training when the splits cannot be used together."""
    shapes = {name: tuple(split.image_shape) for name, split in splits.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(
            f"The splits of `{config.dataset}` differ in image shape: "
            + ", ".join(f"{name} {shape}" for name, shape in shapes.items())
            + ". Give `image_size` to resize them all."
        )


def _train_in_folder(config, train_data, selection, report, verbose):
    """`selection`, `report`: `(split name, InMemoryData)` of the split that
    picks the best epoch and of the one evaluated at the end."""
    workdir = config.workdir
    (selection_name, selection_data), (report_name, test_data) = selection, report
    # --- AAL / distillation: the teacher run comes first (it seeds itself) ---
    if config.uses_teacher() and config.aal_teacher is None:
        run_guard.record_created(workdir, aal_recipe.TEACHER_RUN_FOLDER)
    teacher_path = aal_recipe.prepare_teacher(config, train, verbose) if config.uses_teacher() else None
    keras.utils.set_random_seed(config.seed)
    keras.config.set_dtype_policy(config.precision)

    num_classes, image_size = train_data.num_classes, train_data.image_size
    steps = pipeline.steps_per_epoch(len(train_data), config)
    with data_parallel_scope(config.distribute, config.batch_size):
        model, entry = build_model(config, num_classes, image_size)
        # Saved with every checkpoint: how to feed it, and what its outputs are.
        model.preprocessing = run_preprocessing(json.loads(config.to_json()))
        model.class_names = train_data.class_names
        student = model
        if config.uses_teacher():  # fit the distiller; save and export the student
            teacher = aal_recipe.build_teacher(config, teacher_path, num_classes, image_size)
            # An ImageNet teacher gets the pixels before the pipeline's normalisation.
            normalization = pipeline.normalization(config) if aal_recipe.imagenet_teacher(config) else None
            model = aal_recipe.build_distiller(config, student, teacher, normalization)
        if config.batch_augmentation == "device":  # fit the wrapper; save and export the classifier
            mean, std = pipeline.normalization(config)
            model = DeviceBatchAugmentation(student, mean, std, pipeline.erasing_fill(config))
        run_folder = RunFolder(workdir, saved_model=student)
        compile_model(model, config, entry, steps, num_classes)
        # The model builds: the run is valid, its folder now holds it.
        run_guard.record_created(workdir, run_guard.CONFIG_FILE)
        write_text_atomically(os.path.join(workdir, run_guard.CONFIG_FILE), config.to_json())
        initial_epoch = run_folder.restore(model)
    print(f"{config.model}: {student.count_params():,} parameters, {image_size}x{image_size} images, "
          f"{num_classes} classes, {steps} steps of {config.batch_size} per epoch")
    if initial_epoch >= config.epochs:
        print(f"{workdir} holds a finished run ({config.epochs} epochs): evaluating it again")
    elif initial_epoch:
        print(f"Resuming {workdir} at epoch {initial_epoch + 1}/{config.epochs}")
    if initial_epoch < config.epochs:
        run_guard.record_created(workdir, "tensorboard", *(["diagnostics"] if config.diagnostics else []))
        model.fit(
            pipeline.train_dataset(train_data, config, initial_epoch),
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=pipeline.eval_dataset(selection_data, config),
            # Diagnostics first: an epoch's JSON exists once RunFolder commits the epoch.
            callbacks=diagnostics_callbacks(config, student, test_data)
            # A non-finite loss stops the run (TrainingDiverged) before RunFolder saves its epoch.
            + [StopOnDivergence(workdir), run_folder, keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"))]
            + [EpochTimeEstimate(steps, config.epochs - initial_epoch)]
            + (aal_recipe.distiller_callbacks(config) if config.aal else []),
            shuffle=False,  # the dataset orders itself, per seed and epoch
            verbose=verbose,
        )
    final = model.evaluate(pipeline.eval_dataset(test_data, config), return_dict=True, verbose=0)
    # The row of the epoch RunFolder kept as best (its record survives resumes).
    best = next((row for row in run_folder.history if row["epoch"] == run_folder.best_epoch), {})
    metrics = {
        "model": config.model,
        "dataset": config.dataset,
        "backend": keras.backend.backend(),
        "parameters": int(student.count_params()),
        "epochs": config.epochs,
        "best_chosen_on": selection_name,
        "final_evaluated_on": report_name,
        "final_top1": float(final["top1"]),
        "final_top5": float(final["top5"]) if "top5" in final else None,  # top-5 only past 5 classes
        "best_top1": best.get("val_top1"),
        "best_top5": best.get("val_top5"),
        "best_epoch": best.get("epoch"),
        "train_images_per_second": run_folder.train_images_per_second(config.batch_size),
        "class_names": student.class_names,
    }
    if config.uses_teacher():
        metrics["aal_teacher"] = teacher_path
    run_guard.record_created(workdir, "metrics.json")
    write_text_atomically(os.path.join(workdir, "metrics.json"), json.dumps(metrics, indent=2))
    if config.export:
        run_guard.record_created(workdir, "saved_model")
        metrics["export"] = export_model(student, workdir)
    return metrics
