"""Stochastic depth (drop path) on residual branches."""

import keras
from keras import ops

from keras_smallvit.utils.validation import check_range


@keras.saving.register_keras_serializable(package="keras_smallvit")
class StochasticDepth(keras.layers.Layer):
    """Drops a whole residual branch per sample with probability `rate`.

    Kept samples are scaled by `1 / (1 - rate)` so the expectation is
    unchanged; identity at inference. Keras has no drop-path layer (keras-cv's
    is tied to its own package), hence this one.

    Takes floating inputs only (a `ValueError` otherwise: an integer branch
    cannot carry the `1 / (1 - rate)` scale).

    Args:
        rate: drop probability in `[0, 1)`.
        seed: seed of the layer's `keras.random.SeedGenerator`.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_range("rate", rate, 0.0, 1.0, high_inclusive=False)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not keras.backend.is_float_dtype(inputs.dtype):
            # An integer branch cannot be scaled by 1 / (1 - rate): the cast
            # keep probability is 0 and the division gave NaN.
            raise ValueError(
                f"Invalid `inputs` for StochasticDepth: dtype "
                f"{keras.backend.standardize_dtype(inputs.dtype)}. Allowed: a floating dtype "
                "(float16, bfloat16, float32, float64)."
            )
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        draw = keras.random.uniform(shape, seed=self.seed_generator)
        mask = ops.cast(draw < keep, inputs.dtype)
        return inputs * mask / ops.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
