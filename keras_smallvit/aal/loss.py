"""The attention-link loss of AAL (the paper's Eq. 5)."""

import keras
from keras import ops

from keras_smallvit.utils.validation import check_choice

SPATIAL_REDUCTIONS = ("mean", "sum")


def l2_normalize_maps(maps, epsilon=1e-6):
    """Every map `(B, h, w, C)[b, :, :, c]` divided by its L2 norm.

    Hand-written: `keras.ops.normalize` takes `rsqrt` of the squared norm
    before clamping it, which gives NaN gradients for an all-zero map. Here
    the squared norm is clamped first (at `epsilon**2`), so a zero map stays
    zero and its gradients stay finite (like PyTorch's `F.normalize`).
    """
    squared = ops.sum(ops.square(maps), axis=(1, 2), keepdims=True)
    return maps * ops.rsqrt(ops.maximum(squared, epsilon**2))


def attention_link_losses(augmented_maps, teacher_maps, spatial_reduction="mean", epsilon=1e-6):
    """Per-example attention-link losses `(B,)`, in float32: for every map
    `c`, `reduce_(h, w) (A+_c / ||A+_c|| - B_c / ||B_c||)^2`, averaged over
    the maps.

    Each augmented map and its teacher map are L2-normalised over the
    spatial axes, then compared by squared difference.

    Args:
        augmented_maps: `(B, h, w, C)` output of the link head.
        teacher_maps: `(B, h, w, C)` teacher channel maps on the same grid.
        spatial_reduction: `"mean"` (default: the mean squared error the
            paper's text names, as in attention transfer; the paper's lambda
            of 2000 is for this scale) or `"sum"` (the squared L2 distance of
            the normalised maps, in `[0, 4]` per map).
        epsilon: lower bound of a map's norm: all-zero maps stay zero, with
            finite gradients. A zero teacher map costs a constant (1 per map
            for `"sum"`) and pulls its augmented map nowhere.
    """
    check_choice("spatial_reduction", spatial_reduction, SPATIAL_REDUCTIONS)
    if tuple(augmented_maps.shape[1:]) != tuple(teacher_maps.shape[1:]):
        raise ValueError(
            f"Invalid `teacher_maps`: shape {teacher_maps.shape} does not match the augmented maps "
            f"{augmented_maps.shape}. Expected the same (h, w, C)."
        )
    a = l2_normalize_maps(ops.cast(augmented_maps, "float32"), epsilon)
    b = l2_normalize_maps(ops.cast(teacher_maps, "float32"), epsilon)
    squared = ops.square(a - b)
    per_map = ops.mean(squared, axis=(1, 2)) if spatial_reduction == "mean" else ops.sum(squared, axis=(1, 2))
    return ops.mean(per_map, axis=-1)


def attention_link_loss(augmented_maps, teacher_maps, spatial_reduction="mean", epsilon=1e-6):
    """The attention-link loss `L_att`: `attention_link_losses` averaged
    over the batch (a float32 scalar). Same arguments."""
    return ops.mean(attention_link_losses(augmented_maps, teacher_maps, spatial_reduction, epsilon))


@keras.saving.register_keras_serializable(package="keras_smallvit")
class AttentionLinkLoss(keras.losses.Loss):
    """`L_att` as a Keras loss: `loss(teacher_maps, augmented_maps)`.

    As a `keras.losses.Loss` it is reduced, weighted and scaled for
    distribution strategies like the cross-entropy it is added to.

    Args:
        spatial_reduction: `"mean"` or `"sum"` (see `attention_link_losses`).
        epsilon: lower bound of a map's norm.
        name: loss name.
        reduction: Keras loss reduction.
    """

    def __init__(self, spatial_reduction="mean", epsilon=1e-6, name="attention_link_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.spatial_reduction = check_choice("spatial_reduction", spatial_reduction, SPATIAL_REDUCTIONS)
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        return attention_link_losses(y_pred, y_true, self.spatial_reduction, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update(spatial_reduction=self.spatial_reduction, epsilon=self.epsilon)
        return config
