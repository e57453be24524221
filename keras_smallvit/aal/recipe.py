"""AAL and logit distillation in the training recipe (`TrainConfig.aal`,
`TrainConfig.distillation`): their one teacher (from a file, or a teacher
run trained first on the same data), the distiller and its lambda
schedule."""

import dataclasses
import os

from keras_smallvit.aal.callbacks import LinkLambdaScheduler
from keras_smallvit.aal.distiller import AttentionLinkDistiller
from keras_smallvit.aal.logits import LogitDistiller
from keras_smallvit.aal.teacher import TEACHER_LAYER_CHOICES
from keras_smallvit.aal.teacher import load_teacher
from keras_smallvit.aal.teacher import teacher_file

TEACHER_RUN_FOLDER = "teacher"


def teacher_run_config(config):
    """The `TrainConfig` of the teacher run: the same data, recipe, precision
    and seed, with the teacher model at its registry learning rate, into
    `<workdir>/teacher`, without export."""
    epochs = config.aal_teacher_epochs or config.epochs
    return dataclasses.replace(
        config,
        model=config.aal_teacher_model,
        techniques=None,
        model_overrides=dict(config.aal_teacher_overrides),
        sata_lr=None,
        sata_threshold=None,
        epochs=epochs,
        warmup_epochs=min(config.resolved_warmup_epochs(), epochs - 1),
        lr=None,
        workdir=os.path.join(config.workdir, TEACHER_RUN_FOLDER),
        export=False,
        diagnostics=False,  # a CNN teacher has no attention to diagnose
        aal=False,
        distillation=None,
        aal_teacher=None,
        aal_teacher_model=None,
        aal_teacher_overrides={},
        aal_teacher_epochs=None,
    )


def imagenet_teacher(config):
    """Whether the teacher of `config` gets ImageNet weights (`aal_teacher`
    "imagenet")."""
    return isinstance(config.aal_teacher, str) and config.aal_teacher.lower() == "imagenet"


def prepare_teacher(config, train_fn, verbose="auto"):
    """The teacher of `config`: `aal_teacher` (a file, a run folder or
    "imagenet"), or else the `last.keras`
    of a teacher run trained first with `train_fn` (resumed if interrupted,
    skipped once finished). The last epoch, not the best: "best" is chosen
    on the test split."""
    if config.aal_teacher is not None:
        return config.aal_teacher
    teacher_config = teacher_run_config(config)
    path = os.path.join(teacher_config.workdir, "last.keras")
    if not os.path.exists(os.path.join(teacher_config.workdir, "metrics.json")):
        print(f"Training the teacher {teacher_config.model} into {teacher_config.workdir}")
        train_fn(teacher_config, verbose=verbose)
    return path


def build_teacher(config, path, num_classes, image_size):
    """Loads the teacher of `config` from `path` (`.keras`, a run folder's
    `last.keras`, or a `.weights.h5` file / "imagenet" into a fresh
    `aal_teacher_model` with `aal_teacher_overrides`, at the student's
    `image_size` unless `teacher.image_size` is given)."""
    from keras_smallvit.models import create_model

    path = teacher_file(path)
    if str(path).endswith(".keras"):
        return load_teacher(path)
    overrides = dict(config.aal_teacher_overrides)
    model = create_model(
        config.aal_teacher_model,
        num_classes=overrides.pop("num_classes", num_classes),
        image_size=overrides.pop("image_size", image_size),
        **overrides,
    )
    return load_teacher(path, model)


def build_distiller(config, student, teacher, normalization=None):
    """The distiller of `config` around `student`: an `AttentionLinkDistiller`
    with `aal` (with logit distillation too when `distillation` is set),
    else a `LogitDistiller`.

    Args:
        config: the `TrainConfig`.
        student: the classifier to train.
        teacher: the teacher (`build_teacher`).
        normalization: `(mean, std)` the pipeline normalises the images with
            (`pipeline.normalization`); an ImageNet teacher gets the images
            with it undone (`[0, 1]` pixels, its own preprocessing in its
            graph). Other teachers were trained on the pipeline's images
            and get them as they are.
    """
    undo = imagenet_teacher(config) and normalization is not None
    distillation = dict(
        distillation=config.distillation,
        distillation_alpha=float(config.distillation_alpha),
        distillation_tau=float(config.distillation_tau),
        student_normalization=tuple(normalization) if undo else None,
    )
    if not config.aal:
        return LogitDistiller(student, teacher, **distillation)
    layers = config.aal_teacher_layers
    if layers not in TEACHER_LAYER_CHOICES:
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    return AttentionLinkDistiller(
        student, teacher, teacher_layers=layers, links=config.aal_links, link_lambda=float(config.aal_lambda),
        **distillation,
    )


def distiller_callbacks(config):
    return [LinkLambdaScheduler(float(config.aal_lambda), config.aal_decay, config.epochs)]
