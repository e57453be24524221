"""DeiT-style logit distillation (Touvron et al. 2021) from a frozen teacher.

    hard: (1 - alpha) CE(logits, labels) + alpha CE(logits, argmax teacher)
    soft: (1 - alpha) CE(logits, labels)
          + alpha tau^2 KL(softmax(teacher / tau) || softmax(logits / tau))

A student with one head (a plain ViT, as the AAL paper's Table 6 compares:
CE, CE + soft, CE + hard, CE + AAL + hard): both terms train that head. A
student with DeiT's distillation token and head (`deit_*_distilled`,
`ImageClassifier.distillation_head`), as DeiT: the CE term trains the class
head (`class_logits`), the teacher term the distillation head
(`distillation_logits`), and the model's output, which the metrics read and
inference uses, is the mean of the two heads.

Defaults are DeiT's code (alpha 0.5, tau 1.0: with alpha 0.5, hard is the
paper's `1/2 CE + 1/2 CE(teacher argmax)`). The KL term is the formula's:
summed over the classes, averaged over the batch (Hinton et al.'s
"batchmean"). DeiT's code divides the summed KL by batch x classes instead
(PyTorch's legacy reduction, its issue 61): with C classes its soft term is
this one divided by C.
"""

import keras
import numpy as np
from keras import ops

from keras_smallvit.aal.resize import DEFAULT_CUBIC_COEFFICIENT
from keras_smallvit.aal.resize import resize_maps
from keras_smallvit.utils.distillation import DEFAULT_DISTILLATION_ALPHA
from keras_smallvit.utils.distillation import DEFAULT_DISTILLATION_TAU
from keras_smallvit.utils.distillation import DISTILLATION_MODES
from keras_smallvit.utils.distillation import check_distillation_settings
from keras_smallvit.utils.validation import check_choice

_SOFTMAX_LAYERS = (keras.layers.Softmax,)


def logit_distillation_losses(student_logits, teacher_logits, mode="hard", tau=DEFAULT_DISTILLATION_TAU):
    """Per-example teacher terms `(B,)`, in float32, with no gradient to
    the teacher.

    Args:
        student_logits: `(B, C)` logits of the student.
        teacher_logits: `(B, C)` logits of the teacher on the same images.
        mode: `"hard"`: `CE(student, one_hot(argmax teacher))` (ties: the
            first class; `tau` is not used), or `"soft"`:
            `tau^2 KL(softmax(teacher / tau) || softmax(student / tau))`,
            from log-softmaxes (no clipping of probabilities).
        tau: the softmax temperature of `"soft"`.
    """
    check_choice("mode", mode, DISTILLATION_MODES)
    if tuple(student_logits.shape[1:]) != tuple(teacher_logits.shape[1:]):
        raise ValueError(
            f"Invalid `teacher_logits`: shape {teacher_logits.shape} does not match the student's logits "
            f"{student_logits.shape}. Expected the same classes."
        )
    student = ops.cast(student_logits, "float32")
    teacher = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
    if mode == "hard":
        targets = ops.one_hot(ops.argmax(teacher, axis=-1), int(student.shape[-1]), dtype="float32")
        return keras.losses.categorical_crossentropy(targets, student, from_logits=True)
    log_teacher = ops.log_softmax(teacher / tau, axis=-1)
    log_student = ops.log_softmax(student / tau, axis=-1)
    return (tau * tau) * ops.sum(ops.exp(log_teacher) * (log_teacher - log_student), axis=-1)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class LogitDistillationLoss(keras.losses.Loss):
    """The teacher term as a Keras loss: `loss(teacher_logits, student_logits)`
    (see `logit_distillation_losses`), reduced, weighted and scaled for
    distribution strategies like the cross-entropy it is mixed with.

    Args:
        mode: `"hard"` or `"soft"`.
        tau: the temperature of `"soft"` (> 0).
        name: loss name.
        reduction: Keras loss reduction.
    """

    def __init__(self, mode="hard", tau=DEFAULT_DISTILLATION_TAU, name="logit_distillation_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.mode, _, self.tau = check_distillation_settings(mode, None, tau, names=("mode", None, "tau"))

    def call(self, y_true, y_pred):
        return logit_distillation_losses(y_pred, y_true, self.mode, self.tau)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, tau=self.tau)
        return config


def check_teacher_classifier(teacher, student):
    """Raises a `ValueError` unless `teacher` is a Keras model with one image
    input and one `(B, C)` output of logits, `C` the student's classes."""
    outputs = getattr(teacher, "outputs", None) or ()
    if not isinstance(teacher, keras.Model) or len(getattr(teacher, "inputs", None) or ()) != 1 or len(outputs) != 1:
        raise ValueError(
            f"Invalid `teacher`: {teacher!r}. Expected a functional Keras classifier with one image input "
            "and one output (its logits)."
        )
    classes, student_classes = tuple(outputs[0].shape[1:]), tuple(student.outputs[0].shape[1:])
    if classes != student_classes:
        raise ValueError(
            f"Invalid `teacher`: its outputs {tuple(outputs[0].shape)} do not match the student's classes "
            f"{tuple(student.outputs[0].shape)}. Expected a teacher of the same classes."
        )
    last = teacher.layers[-1]
    if isinstance(last, _SOFTMAX_LAYERS) or getattr(last, "activation", None) is keras.activations.softmax:
        raise ValueError(
            f"Invalid `teacher`: its last layer {last.name!r} applies a softmax. Expected logits "
            "(the distillation takes the softmax itself)."
        )


class LogitDistillationMixin:
    """The teacher's logit term of a distiller (a `keras.Model` with a
    `student`, a frozen `teacher`, a `ce_tracker` and `_resize`): set up,
    mixed into the loss, serialised (`from_config` deserialises `student`
    and `teacher`). Shared by `LogitDistiller` and
    `keras_smallvit.aal.AttentionLinkDistiller`."""

    def _init_logit_distillation(self, distillation, alpha, tau, student, teacher):
        self.distillation = distillation
        self.distillation_alpha = float(alpha)
        self.distillation_tau = float(tau)
        if distillation is None:
            return
        check_distillation_settings(distillation, alpha, tau)
        check_teacher_classifier(teacher, student)
        self.logit_distillation_loss_fn = LogitDistillationLoss(distillation, tau)
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")

    def _init_teacher_input(self, student_normalization, channels):
        """Checks and keeps `student_normalization`: None, or `(mean, std)`
        of `channels` values each (see `teacher_images`)."""
        self.student_normalization = None
        if student_normalization is None:
            return
        try:
            mean, std = (np.asarray(v, "float64").reshape(-1) for v in student_normalization)
        except (TypeError, ValueError):
            mean = std = None
        if mean is None or len(mean) != channels or len(std) != channels or not np.all(std > 0):
            raise ValueError(
                f"Invalid `student_normalization`: {student_normalization!r}. Allowed values: None, or "
                f"(mean, std) of the student's input normalisation, {channels} values each, std > 0."
            )
        self.student_normalization = (mean.tolist(), std.tolist())

    def teacher_images(self, images):
        """What the teacher is given for the student's `images`: with
        `student_normalization` `(mean, std)`, the pixels before that
        normalisation, `images * std + mean` (float32, the teacher's own
        preprocessing then applies: an ImageNet EfficientNet's normalisation
        is in its graph); then resized (bicubic) to the teacher's input size
        when it differs."""
        if self.student_normalization is not None:
            mean, std = (np.asarray(v, "float32") for v in self.student_normalization)
            images = ops.add(ops.multiply(ops.cast(images, "float32"), std), mean)
        if None not in self._teacher_image_size and tuple(self._teacher_image_size) != tuple(self._image_size):
            return self._resize(ops.cast(images, "float32"), self._teacher_image_size)
        return images

    def student_heads(self, student_outputs):
        """The entries of `y_pred` from the student's outputs: `"logits"`
        (its output), and with distillation and a student with DeiT's
        distillation head, `"class_logits"` and `"distillation_logits"`."""
        if self.distillation is None or "distillation_logits" not in student_outputs:
            return {"logits": student_outputs["logits"]}
        heads = {k: student_outputs[k] for k in ("class_logits", "distillation_logits")}
        return {"logits": (heads["class_logits"] + heads["distillation_logits"]) / 2.0, **heads}

    @staticmethod
    def ce_logits(y_pred):
        """What the CE term reads: the class head of a distillation-head
        student (DeiT), else the one head."""
        return y_pred.get("class_logits", y_pred["logits"])

    def _mix_logit_distillation(self, ce, y_pred, sample_weight):
        """`(1 - alpha) CE + alpha D` in float32 (`CE` alone without
        distillation); logs `distillation_loss` (D), on the distillation
        head when the student has one."""
        ce = ops.cast(ce, "float32")
        if self.distillation is None:
            return ce
        student_logits = y_pred.get("distillation_logits", y_pred["logits"])
        term = self.logit_distillation_loss_fn(y_pred["teacher_logits"], student_logits, sample_weight)
        self.distillation_loss_tracker.update_state(term, sample_weight=ops.shape(y_pred["logits"])[0])
        return (1.0 - self.distillation_alpha) * ce + self.distillation_alpha * term

    def _distiller_config(self):
        """The config entries every distiller has: name, trainable, the two
        models and the distillation settings."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "distillation": self.distillation,
            "distillation_alpha": self.distillation_alpha,
            "distillation_tau": self.distillation_tau,
            "student_normalization": self.student_normalization,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class LogitDistiller(LogitDistillationMixin, keras.Model):
    """Trains a student classifier with DeiT-style soft or hard distillation
    from a frozen teacher (see this module's formulas): on its one head, or,
    for a student with DeiT's distillation head, the labels on the class
    head and the teacher on the distillation head.

    Use it like any model: `compile(optimizer, loss, metrics)` with the
    student's classification loss (the CE term: label smoothing and Mixup /
    CutMix soft labels as in plain training) and metrics, then `fit`. The
    teacher sees the same (augmented, mixed) batch as the student, in
    inference mode, frozen (`trainable=False`), with no gradient. Logs
    report `loss` (the total), `ce_loss` (the compiled loss) and
    `distillation_loss` (the teacher term before alpha). `call` returns
    `{"logits", "teacher_logits"}` (and `"class_logits"`,
    `"distillation_logits"` for a distillation-head student; `"logits"` is
    then their mean, the student's output); for inference and export use
    `distiller.student`.

    Written as a `keras.Model` rather than with `keras.distillation.Distiller`
    and its `LogitsDistillation` (Keras 3.15): that loss has no hard
    (teacher argmax) mode, its KL goes through probabilities clipped at
    1e-7, its student term leaves out sample weights, and its distiller
    cannot be the AAL distiller (CE + AAL + hard needs one model holding the
    link head, both teacher outputs from one teacher pass and all three
    terms); both distillers here share `LogitDistillationMixin`.

    Args:
        student: a Keras classifier (one output of logits).
        teacher: a functional Keras classifier of the same classes, taking
            the same images (resized bicubically to its input size if that
            differs); its output must be logits.
        distillation: `"hard"` (default) or `"soft"`.
        distillation_alpha: weight of the teacher term, in [0, 1] (0.5).
        distillation_tau: temperature of `"soft"`, > 0 (1.0).
        student_normalization: None (the teacher gets the student's input
            as is: a teacher trained on the same pipeline), or `(mean, std)`
            per channel the student's images were normalised with: the
            teacher gets the pixels before it (`images * std + mean`), for a
            teacher with its own preprocessing.
    """

    def __init__(
        self,
        student,
        teacher,
        distillation="hard",
        distillation_alpha=DEFAULT_DISTILLATION_ALPHA,
        distillation_tau=DEFAULT_DISTILLATION_TAU,
        student_normalization=None,
        name="logit_distiller",
        **kwargs,
    ):
        kwargs["dtype"] = "float32"  # the loss is float32; the models keep their own policies
        super().__init__(name=name, **kwargs)
        if not isinstance(student, keras.Model) or len(getattr(student, "outputs", None) or ()) != 1:
            raise ValueError(f"Invalid `student`: {student!r}. Expected a functional Keras classifier.")
        if distillation is None:
            raise ValueError("Invalid `distillation`: None. Allowed values: 'soft', 'hard'.")
        self._init_logit_distillation(distillation, distillation_alpha, distillation_tau, student, teacher)
        self._init_teacher_input(student_normalization, int(student.input_shape[-1]))
        teacher.trainable = False
        self.student = student
        self.teacher = teacher
        # DeiT's two heads, from one student pass (weights shared with `student`).
        if getattr(student, "distillation_head", False):
            self.student_heads_model = student.distillation_heads_model()
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self._image_size = tuple(student.input_shape[1:3])
        self._teacher_image_size = tuple(teacher.input_shape[1:3])
        self.built = True

    def _resize(self, images, size):
        return resize_maps(images, size, DEFAULT_CUBIC_COEFFICIENT, False)

    def teacher_logits(self, images):
        """The frozen teacher's `(B, C)` float32 logits (no gradient)."""
        logits = self.teacher(self.teacher_images(images), training=False)
        return ops.stop_gradient(ops.cast(logits, "float32"))

    def call(self, images, training=None):
        if getattr(self.student, "distillation_head", False):
            outputs = self.student_heads(self.student_heads_model(images, training=training))
        else:
            outputs = {"logits": self.student(images, training=training)}
        return {**outputs, "teacher_logits": self.teacher_logits(images)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        ce = super().compute_loss(
            x=x, y=y, y_pred=self.ce_logits(y_pred), sample_weight=sample_weight, training=training
        )
        self.ce_tracker.update_state(ce, sample_weight=ops.shape(y_pred["logits"])[0])
        return self._mix_logit_distillation(ce, y_pred, sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred["logits"], sample_weight)

    def get_config(self):
        return self._distiller_config()
