"""SATA: suppressing accumulated trivial attention (Chen et al. 2023)."""

import keras
from keras import ops

from keras_smallvit.utils.validation import check_range


@keras.saving.register_keras_serializable(package="keras_smallvit")
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

    `s` is one trainable scalar (per layer, shared by all heads). The paper
    trains it with its own learning rate; here `s = scale_lr_multiplier * u`
    with `u` the stored variable, so Adam-type optimizers (whose steps do not
    depend on the gradient's scale) move `s` at `scale_lr_multiplier` times
    the model's learning rate. Weight decay then also acts on `s` at the
    model's rate (the official code decays it at the rate of its own optimizer).

    The computation runs in float32 whatever the dtype policy.

    Args:
        threshold: relative threshold `t` in `[0, 1]` (0.1 in the paper; 0.05
            for PiT on CIFAR-100).
        initial_scale: initial `s`, `>= 0` (0.5 in the paper).
        scale_lr_multiplier: learning rate of `s` relative to the model's,
            `> 0` (e.g. `7e-5 / 3e-3` for ViT on CIFAR-100).
        trainable_scale: whether `s` is learned.
        epsilon: added to the trivial mass in the denominator, `> 0` (keeps rows
            without trivial entries finite).
    """

    def __init__(
        self,
        threshold=0.1,
        initial_scale=0.5,
        scale_lr_multiplier=1.0,
        trainable_scale=True,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.threshold = check_range("threshold", threshold, 0.0, 1.0)
        self.initial_scale = check_range("initial_scale", initial_scale, 0.0, None)
        self.scale_lr_multiplier = check_range(
            "scale_lr_multiplier", scale_lr_multiplier, 0.0, None, low_inclusive=False
        )
        self.trainable_scale = bool(trainable_scale)
        self.epsilon = check_range("epsilon", epsilon, 0.0, None, low_inclusive=False)

    def build(self, input_shape):
        self.scale_parameter = self.add_weight(
            name="scale_parameter",
            shape=(),
            initializer=keras.initializers.Constant(
                self.initial_scale / self.scale_lr_multiplier
            ),
            trainable=self.trainable_scale,
            dtype="float32",
            autocast=False,  # s stays float32 under mixed precision
        )

    @property
    def scale(self):
        """The suppression scale `s` (a float32 tensor)."""
        return self.scale_parameter * self.scale_lr_multiplier

    def call(self, attention):
        threshold, epsilon = self.threshold, self.epsilon

        # Written with its gradient by hand: the same values as autodiff of the
        # formula with a stop-gradient mask (tested against NumPy), in about
        # half the elementwise passes over the (B, heads, N, N) maps, which is
        # what SATA costs where ops are not fused (eager PyTorch).
        @ops.custom_gradient
        def twist(attention, scale):
            row_max = ops.max(attention, axis=-1, keepdims=True)
            trivial = attention <= threshold * row_max
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

        return twist(ops.cast(attention, "float32"), ops.cast(self.scale, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, attention):
        return keras.KerasTensor(attention.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            threshold=self.threshold,
            initial_scale=self.initial_scale,
            scale_lr_multiplier=self.scale_lr_multiplier,
            trainable_scale=self.trainable_scale,
            epsilon=self.epsilon,
        )
        return config
