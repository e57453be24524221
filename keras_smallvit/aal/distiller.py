"""The AAL distiller: a student ViT trained with `model.fit` under
`L = CE + lambda * L_att`, a frozen CNN teacher and the link head."""

import keras
import numpy as np
from keras import ops

from keras_smallvit.aal.callbacks import DEFAULT_LINK_LAMBDA
from keras_smallvit.layers.attention_link import AttentionLinkHead
from keras_smallvit.aal.links import link_magnitudes
from keras_smallvit.aal.links import link_matrix
from keras_smallvit.aal.logits import LogitDistillationMixin
from keras_smallvit.aal.loss import AttentionLinkLoss
from keras_smallvit.aal.resize import DEFAULT_CUBIC_COEFFICIENT
from keras_smallvit.aal.resize import resize_maps
from keras_smallvit.aal.teacher import select_teacher_layers
from keras_smallvit.utils.distillation import DEFAULT_DISTILLATION_ALPHA
from keras_smallvit.utils.distillation import DEFAULT_DISTILLATION_TAU


@keras.saving.register_keras_serializable(package="keras_smallvit")
class AttentionLinkDistiller(LogitDistillationMixin, keras.Model):
    """Trains a student ViT with adaptive attention links to a frozen CNN
    teacher (AAL: `L = CE + lambda * L_att`).

    One forward pass of the student gives its logits and the class-token
    attention of every layer and head (`student.attention_model()`); these
    maps, stacked as `(B, h, w, layers * heads)`, go through the link head
    (`AttentionLinkHead`, a 1x1 convolution) to `C` augmented maps. The
    teacher's `C` channel maps (`teacher_layers`), bicubically resized to the
    student's `h x w` grid, are the targets (`AttentionLinkLoss`). The teacher
    is frozen (`trainable=False`, inference mode, no gradient).

    Use it like any model: `compile(optimizer, loss, metrics)` with the
    student's classification loss and metrics, then `fit`. Logs report
    `loss` (the total), `ce_loss` (the compiled loss, plus any regularisation
    losses), `link_loss` (`L_att`) and `link_lambda` (and `distillation_loss`
    with `distillation`). Add a
    `LinkLambdaScheduler` callback for the paper's per-epoch decay of lambda.
    `call` returns `{"logits", "augmented_maps", "teacher_maps"}` (and
    `"teacher_logits"` with `distillation`); for
    inference and export use `distiller.student`, which holds no trace of
    the head or the teacher.

    Written as a `keras.Model` rather than with `keras.distillation.Distiller`:
    that class needs matching teacher/student outputs, mixes its losses with
    weights summing to 1 (not `CE + 2000 * L_att`), runs the student twice to
    get its features, and has no place for a trainable head between them.

    With `distillation` ("soft" or "hard": the AAL paper's "CE + AAL +
    hard"), the CE term becomes DeiT's logit distillation on the student's
    one head (as `keras_smallvit.aal.LogitDistiller`; for a student with
    DeiT's distillation head, CE on the class head and D on the
    distillation head, the AAL paper's "DeiT-S (distilled version)"):
    `L = (1 - alpha) CE + alpha D + lambda * L_att`, the teacher's maps and
    logits from one teacher pass.

    Choices the paper leaves open (all options; defaults documented):
    the grid: the student's finest class-token grid (PiT's coarser stages
    are resized up to it); teacher maps: see `select_teacher_layers`;
    resizing: PyTorch's bicubic (`resize_coefficient` -0.75, no
    antialias); the loss scale: see `AttentionLinkLoss`; link init: see
    `AttentionLinkHead`; evaluation reports the same terms on the
    validation data (`val_ce_loss` is comparable with plain training).

    Args:
        student: an `ImageClassifier` of this package (anything with
            `attention_model()` returning `"class_token_attention"`).
        teacher: a functional Keras CNN taking the same images (channels
            last; images are resized to its input size if that differs).
            It is frozen here (`teacher.trainable = False`); it gets the
            student's input, or with `student_normalization` the pixels
            before the student's normalisation.
        teacher_layers: which teacher maps to match (see
            `select_teacher_layers`): `"block_normalization"` (default),
            `"normalization"`, `"after_normalization"`, or layer names.
        links: `"full"` (default), `"alpha"` or `"beta"` (the paper's
            Table 1 by relative depth, see `link_matrix`), or a 0/1 array
            `(teacher blocks, student layers)`.
        link_lambda: initial lambda (paper: 2000).
        spatial_reduction: `"mean"` or `"sum"` over the map pixels (see
            `AttentionLinkLoss`).
        resize_coefficient: cubic coefficient of the bicubic resize.
        resize_antialias: low-pass filter when downsizing teacher maps.
        epsilon: lower bound of a map's norm in the loss.
        distillation: None (default), or `"soft"` / `"hard"` logit
            distillation from the same teacher (its output must be logits of
            the student's classes).
        distillation_alpha: weight of the distillation term (0.5).
        distillation_tau: temperature of `"soft"` (1.0).
        student_normalization: None (the teacher gets the student's input
            as is: a teacher trained on the same pipeline), or `(mean, std)`
            per channel the student's images were normalised with: the
            teacher gets the pixels before it (`images * std + mean`), for a
            teacher with its own preprocessing (an ImageNet EfficientNet:
            `[0, 1]` pixels, ImageNet's normalisation in its graph).
    """

    def __init__(
        self,
        student,
        teacher,
        teacher_layers="block_normalization",
        links="full",
        link_lambda=DEFAULT_LINK_LAMBDA,
        spatial_reduction="mean",
        resize_coefficient=DEFAULT_CUBIC_COEFFICIENT,
        resize_antialias=False,
        epsilon=1e-6,
        distillation=None,
        distillation_alpha=DEFAULT_DISTILLATION_ALPHA,
        distillation_tau=DEFAULT_DISTILLATION_TAU,
        student_normalization=None,
        name="attention_link_distiller",
        **kwargs,
    ):
        # float32: the loss and the maps are float32; the student and the
        # teacher keep their own dtype policies.
        kwargs["dtype"] = "float32"
        super().__init__(name=name, **kwargs)
        if not isinstance(student, keras.Model) or not hasattr(student, "attention_model"):
            raise ValueError(
                f"Invalid `student`: {student!r}. Expected a keras_smallvit ImageClassifier "
                "(a model with `attention_model()`)."
            )
        if not isinstance(teacher, keras.Model) or len(getattr(teacher, "inputs", None) or ()) != 1:
            raise ValueError(
                f"Invalid `teacher`: {teacher!r}. Expected a functional Keras model (a CNN) with one image input."
            )
        if not isinstance(link_lambda, (int, float)) or isinstance(link_lambda, bool) or link_lambda < 0:
            raise ValueError(f"Invalid `link_lambda`: {link_lambda!r}. Expected a number >= 0.")

        # === Student maps ===
        attention_model = student.attention_model()
        student_outputs = attention_model.output
        if "class_token_attention" not in student_outputs:
            raise ValueError(
                f"Invalid `student`: its backbone {student.backbone.__class__.__name__} has no "
                "class-token attention maps on a patch grid (e.g. Swin), which AAL links to the "
                "teacher. Allowed values: ViT, PiT, CaiT or T2T classifiers."
            )
        class_maps = student_outputs["class_token_attention"]
        heads_per_layer = [int(m.shape[1]) for m in class_maps]
        self.grid_size = max((tuple(m.shape[2:4]) for m in class_maps), key=lambda s: s[0] * s[1])
        input_groups = [layer for layer, heads in enumerate(heads_per_layer) for _ in range(heads)]

        # === Teacher maps ===
        image_shape = tuple(student.input_shape[1:])
        teacher_shape = tuple(teacher.input_shape[1:])
        if len(teacher_shape) != 3 or teacher_shape[-1] != image_shape[-1]:
            raise ValueError(
                f"Invalid `teacher`: its input shape {teacher_shape} does not take the student's "
                f"images {image_shape}. Expected channels-last images with {image_shape[-1]} channels."
            )
        teacher.trainable = False
        self._init_logit_distillation(distillation, distillation_alpha, distillation_tau, student, teacher)
        self._init_teacher_input(student_normalization, image_shape[-1])
        selection = select_teacher_layers(teacher, teacher_layers)
        known = {layer.name: layer for layer in teacher.layers}
        feature_outputs = [known[n].output for n in selection.names]
        # With distillation, the teacher's logits too: one teacher pass for both.
        logits = list(teacher.outputs) if distillation is not None else []
        teacher_features = keras.Model(
            teacher.inputs[0], feature_outputs + logits, name=f"{teacher.name}_link_maps"
        )
        self._num_teacher_maps = len(feature_outputs)
        channels = [int(t.shape[-1]) for t in feature_outputs]
        output_groups = [b for b, c in zip(selection.blocks, channels) for _ in range(c)]
        self.link_matrix = link_matrix(links, len(selection.block_names), len(heads_per_layer))

        # === Layers ===
        head = AttentionLinkHead(
            num_maps=len(output_groups),
            links=None if isinstance(links, str) and links == "full" else self.link_matrix.tolist(),
            input_groups=None if isinstance(links, str) and links == "full" else input_groups,
            output_groups=None if isinstance(links, str) and links == "full" else output_groups,
            dtype="float32",  # the maps and the loss are float32
            name="attention_link_head",
        )
        head.build((None, *self.grid_size, len(input_groups)))
        self.student = student
        self.teacher = teacher
        self.attention_model = attention_model
        self.teacher_features = teacher_features
        self.link_head = head
        self.link_loss_fn = AttentionLinkLoss(spatial_reduction, epsilon)
        self.link_lambda = self.add_weight(
            name="link_lambda", shape=(), initializer=keras.initializers.Constant(link_lambda),
            trainable=False, dtype="float32",
        )
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.link_loss_tracker = keras.metrics.Mean(name="link_loss")
        self.link_lambda_tracker = keras.metrics.Mean(name="link_lambda")

        # === Config and bookkeeping ===
        self.teacher_layers = teacher_layers if isinstance(teacher_layers, str) else list(teacher_layers)
        self.links = links if isinstance(links, str) else np.asarray(links).tolist()
        self.initial_link_lambda = float(link_lambda)
        self.spatial_reduction = spatial_reduction
        self.resize_coefficient = float(resize_coefficient)
        self.resize_antialias = bool(resize_antialias)
        self.epsilon = float(epsilon)
        self.teacher_layer_names = selection.names
        self.teacher_block_names = selection.block_names
        self.input_groups = input_groups
        self.output_groups = output_groups
        self._image_size = image_shape[:2]
        self._teacher_image_size = teacher_shape[:2]
        self.built = True

    # --- forward and loss -------------------------------------------------------

    def _resize(self, maps, size):
        return resize_maps(maps, size, self.resize_coefficient, self.resize_antialias)

    def student_maps(self, class_token_attention):
        """`(B, h, w, sum of heads)` float32 from the per-layer `(B, heads, h_l, w_l)` maps."""
        maps = []
        for layer_maps in class_token_attention:
            layer_maps = ops.transpose(ops.cast(layer_maps, "float32"), (0, 2, 3, 1))
            maps.append(self._resize(layer_maps, self.grid_size))
        return ops.concatenate(maps, axis=-1)

    def teacher_outputs(self, images):
        """One pass of the frozen teacher: its `(B, h, w, C)` float32 maps on
        the student's grid, and its `(B, classes)` float32 logits with
        `distillation` (else None); no gradient."""
        features = self.teacher_features(self.teacher_images(images), training=False)
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        maps = [self._resize(ops.cast(f, "float32"), self.grid_size) for f in features[: self._num_teacher_maps]]
        logits = None if self.distillation is None else ops.stop_gradient(ops.cast(features[-1], "float32"))
        return ops.stop_gradient(ops.concatenate(maps, axis=-1)), logits

    def teacher_maps(self, images):
        """The frozen teacher's `(B, h, w, C)` float32 maps on the student's grid."""
        return self.teacher_outputs(images)[0]

    def call(self, images, training=None):
        outputs = self.attention_model(images, training=training)
        augmented = self.link_head(self.student_maps(outputs["class_token_attention"]))
        teacher_maps, teacher_logits = self.teacher_outputs(images)
        result = {**self.student_heads(outputs), "augmented_maps": augmented, "teacher_maps": teacher_maps}
        if teacher_logits is not None:
            result["teacher_logits"] = teacher_logits
        return result

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        ce = super().compute_loss(
            x=x, y=y, y_pred=self.ce_logits(y_pred), sample_weight=sample_weight, training=training
        )
        link = self.link_loss_fn(y_pred["teacher_maps"], y_pred["augmented_maps"], sample_weight)
        link_lambda = ops.cast(self.link_lambda, "float32")
        batch_size = ops.shape(y_pred["logits"])[0]
        self.ce_tracker.update_state(ce, sample_weight=batch_size)
        self.link_loss_tracker.update_state(link, sample_weight=batch_size)
        self.link_lambda_tracker.update_state(link_lambda)
        return self._mix_logit_distillation(ce, y_pred, sample_weight) + link_lambda * link

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred["logits"], sample_weight)

    # --- diagnostics ----------------------------------------------------------

    def link_magnitudes(self):
        """Mean |link| between every teacher block (rows, shallow to deep,
        named by `teacher_block_names`) and student layer (columns): the
        paper's Figure 2, as a NumPy array `(blocks, layers)`."""
        return link_magnitudes(self.link_head.link_weights(), self.input_groups, self.output_groups)

    # --- serialization ----------------------------------------------------------

    def get_config(self):
        return {
            **self._distiller_config(),
            "teacher_layers": self.teacher_layers,
            "links": self.links,
            "link_lambda": self.initial_link_lambda,
            "spatial_reduction": self.spatial_reduction,
            "resize_coefficient": self.resize_coefficient,
            "resize_antialias": self.resize_antialias,
            "epsilon": self.epsilon,
        }
