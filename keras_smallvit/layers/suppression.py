"""SATA: suppressing accumulated trivial attention (Chen et al. 2023)."""

import keras
import numpy as np
from keras import ops

from keras_smallvit import kernels
from keras_smallvit.utils import legacy
from keras_smallvit.utils.validation import check_range

#: `variable.name` of the SATA scale `s`, for optimizers that give it its own
#: learning rate (`MultiRateAdamW(learning_rate_multipliers={SCALE_NAME: ...})`).
SCALE_NAME = "sata_scale"


def row_max(x):
    """`ops.max(x, axis=-1, keepdims=True)`, also for an empty `x` (a batch of
    0 images): Keras' max raises on an empty tensor on TensorFlow (eager) and
    PyTorch, where the reduction of an empty batch is itself empty. Known
    statically there (eager shapes are concrete); a traced shape with an
    unknown size takes the plain max, which neither backend's graph checks."""
    shape = tuple(x.shape)
    if any(size == 0 for size in shape):
        return ops.zeros(shape[:-1] + (1,), dtype=x.dtype)
    return ops.max(x, axis=-1, keepdims=True)


def fused_form_is_faster():
    """Whether `suppress_scores` (softmax and SATA in one) beats the softmax
    followed by `TrivialAttentionSuppression.call` on the current backend:
    under XLA (TensorFlow, JAX) and with PyTorch's fast path
    (`keras_smallvit.kernels`), not in eager PyTorch without it, which runs
    each op as its own pass."""
    return keras.backend.backend() != "torch" or kernels.has_fast_path("sata_softmax")


def twist(attention, scale, threshold, epsilon):
    """TWIST of float32 probabilities `attention` `(..., N_query, N_key)` with
    the scale tensor `s` (`TrivialAttentionSuppression`): the `keras.ops`
    reference of the kernel `"sata_twist"` (`keras_smallvit.kernels`).

    Written with its gradient by hand: the same values as autodiff of the
    formula with a stop-gradient mask (tested against NumPy), in about half
    the elementwise passes over the (B, heads, N, N) maps, which is what SATA
    costs where ops are not fused (eager PyTorch).
    """

    @ops.custom_gradient
    def twist(attention, scale):
        trivial = attention <= threshold * row_max(attention)
        mass = ops.sum(ops.where(trivial, attention, 0.0), axis=-1, keepdims=True) + epsilon
        ratio = scale / mass
        out = ops.where(trivial, ops.square(attention) * ratio, attention)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            upstream_attention = upstream * attention
            # sum over the row's trivial entries of g * A^2
            weighted = ops.sum(ops.where(trivial, upstream_attention * attention, 0.0), axis=-1, keepdims=True)
            correction = ratio * weighted / mass  # per row: small
            grad_attention = ops.where(trivial, upstream_attention * (2.0 * ratio) - correction, upstream)
            return grad_attention, ops.sum(weighted / mass)

        return out, grad

    return twist(attention, scale)


def suppressed_softmax(scores, scale, threshold, epsilon, bias=None, dtype="float32"):
    """`twist(softmax(float32(scores) + bias), scale, threshold, epsilon)`,
    fused, returned in `dtype`: the `keras.ops` reference of the kernel
    `"sata_softmax"` (`TrivialAttentionSuppression.suppress_scores`).
    `bias`: None or a float32 term broadcasting against the scores (a
    mask written as `MASK_VALUE` where masked); the casts and the bias are
    arguments so that a fast path can fold their passes into its own.

    Where it is cheaper: with `e = exp(scores - row max)`, the softmax's
    row maximum is `1 / sum(e)`, so an entry is trivial exactly when
    `e <= threshold`; the trivial mass and the softmax normaliser are then
    two reductions over the same `e`, which XLA fuses into one pass,
    instead of four reductions each waiting for the one before (row max,
    normaliser, maximum of the probabilities, trivial mass). The gradient
    to the scores is written by hand with the two row reductions it needs
    independent of each other (one fused pass again), instead of SATA's
    gradient followed by the softmax's. Eager PyTorch runs each op as its
    own pass and gains nothing from this form; its fast path compiles it
    (`keras_smallvit.kernels`).
    """

    @ops.custom_gradient
    def suppressed_softmax(scores, scale):
        shifted = ops.exp(scores - row_max(scores))
        normaliser = ops.sum(shifted, axis=-1, keepdims=True)
        trivial = shifted <= threshold
        trivial_sum = ops.sum(ops.where(trivial, shifted, 0.0), axis=-1, keepdims=True)
        probs = shifted / normaliser
        mass = trivial_sum / normaliser + epsilon  # the trivial mass of `probs`, + epsilon
        ratio = scale / mass
        out = ops.where(trivial, ops.square(probs) * ratio, probs)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            upstream_probs = upstream * probs
            # Sums over the row's trivial entries of g * A^2 and over the
            # others of g * A: siblings over the same input.
            weighted = ops.sum(ops.where(trivial, upstream_probs * probs, 0.0), axis=-1, keepdims=True)
            plain = ops.sum(ops.where(trivial, 0.0, upstream_probs), axis=-1, keepdims=True)
            # d loss / d A as in `twist`, then the softmax's backward
            # A * (dA - sum(dA * A)), its row sum expanded in `weighted`
            # and `plain` so that it needs no pass of its own.
            grad_probs = ops.where(trivial, upstream_probs * (2.0 * ratio) - ratio * weighted / mass, upstream)
            row_dot = plain + ratio * weighted * (1.0 + epsilon / mass)
            return probs * (grad_probs - row_dot), ops.sum(weighted / mass)

        return out, grad

    scores = ops.cast(scores, "float32")
    if bias is not None:
        scores = scores + ops.cast(bias, "float32")
    return ops.cast(suppressed_softmax(scores, scale), dtype)


@keras.saving.register_keras_serializable(package="keras_smallvit")
@legacy.loads_old_configs("suppression")
class TrivialAttentionSuppression(keras.layers.Layer):
    """TWIST, the trivial weights suppression transformation of SATA.

    Acts on attention probabilities `A` of shape `(..., N_query, N_key)` after
    the softmax and before `A @ V`. With `m` the row maximum, an entry is
    trivial when `A <= threshold * m`; trivial entries become
    `s * A**2 / (sum of the row's trivial entries + epsilon)`, the others are
    unchanged and rows are not renormalised. Lemma 1 of the paper: the trivial
    mass of a row is then at most `s * m`, and no trivial entry grows when
    `s <= 1`. The mask is a constant for differentiation; gradients reach `A`
    and `s`. A row without trivial entries passes through unchanged.

    `s` is one trainable float32 scalar (per layer, shared by all heads),
    stored as the variable `sata_scale` (`SCALE_NAME`; the attribute
    `sata_scale`, its value also as `scale`). The paper trains it with its own
    AdamW learning rate (and weight decay at that rate); that belongs to the
    optimizer, not the layer: `keras_smallvit.training.MultiRateAdamW` with
    `learning_rate_multipliers={"sata_scale": sata_lr / lr}`. Files of the
    versions that had a `scale_lr_multiplier` here load with the same `s`
    (`keras_smallvit.utils.legacy`).

    The computation runs in float32 whatever the dtype policy.

    Args:
        threshold: relative threshold `t` in `[0, 1]` (0.1 in the paper; 0.05
            for PiT on CIFAR-100).
        initial_scale: initial `s`, `>= 0` (0.5 in the paper).
        trainable_scale: whether `s` is learned.
        epsilon: added to the trivial mass in the denominator, `> 0` (keeps rows
            without trivial entries finite).
    """

    def __init__(
        self,
        threshold=0.1,
        initial_scale=0.5,
        trainable_scale=True,
        epsilon=1e-6,
        **kwargs,
    ):
        legacy.check_no_scale_multiplier(type(self), kwargs)
        super().__init__(**kwargs)
        self.threshold = check_range("threshold", threshold, 0.0, 1.0)
        self.initial_scale = check_range("initial_scale", initial_scale, 0.0, None)
        self.trainable_scale = bool(trainable_scale)
        self.epsilon = check_range("epsilon", epsilon, 0.0, None, low_inclusive=False)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                "Invalid `attention` for TrivialAttentionSuppression: expected probabilities of shape "
                f"(..., N_query, N_key), rank >= 2; got shape {tuple(input_shape)} (rank {len(input_shape)})."
            )
        self.input_spec = keras.InputSpec(min_ndim=2)
        self.sata_scale = self.add_weight(
            name=SCALE_NAME,
            shape=(),
            initializer=keras.initializers.Constant(self.initial_scale),
            trainable=self.trainable_scale,
            dtype="float32",
            autocast=False,  # s stays float32 under mixed precision
        )

    @property
    def scale(self):
        """The suppression scale `s` (a float32 tensor)."""
        return ops.convert_to_tensor(self.sata_scale)

    def load_own_variables(self, store):
        super().load_own_variables(store)
        # The one weights hook of the upgrader (keras_smallvit.utils.legacy):
        # an old file stores u = s / c. s = c * u in the stored dtype: the
        # same float32 product the old layer computed on every call.
        units = legacy.pop_stored_scale_units(self)
        if units != 1.0:
            u = np.asarray(store["0"])
            self.sata_scale.assign(np.asarray(u * u.dtype.type(units), "float32"))

    def call(self, attention):
        # `s` as a computed tensor (x * 1 is exact): tf.custom_gradient takes a
        # bare variable read among its inputs for a variable the function uses.
        return kernels.dispatch(
            "sata_twist", twist, ops.cast(attention, "float32"), ops.multiply(self.scale, 1.0),
            self.threshold, self.epsilon,
        )

    def suppress_scores(self, scores, bias=None, dtype="float32"):
        """SATA of `softmax(scores + bias)`, from the scores `(..., N_query,
        N_key)` (computed in float32): the same values as
        `self(ops.softmax(float32(scores) + bias))` and the same gradients
        (to `scores`, `bias` and `s`), in one fused form that compiled
        backends run in about half the time (`suppressed_softmax`).

        Args:
            scores: the attention scores, any float dtype.
            bias: None, or a float32 term added to the float32 scores,
                broadcasting against them (masks as `MASK_VALUE`).
            dtype: the dtype of the result (the values' dtype saves a cast).
        """
        return kernels.dispatch(
            "sata_softmax", suppressed_softmax, ops.convert_to_tensor(scores), ops.multiply(self.scale, 1.0),
            self.threshold, self.epsilon, None if bias is None else ops.convert_to_tensor(bias), dtype,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, attention):
        return keras.KerasTensor(attention.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            threshold=self.threshold,
            initial_scale=self.initial_scale,
            trainable_scale=self.trainable_scale,
            epsilon=self.epsilon,
        )
        return config
