"""CB: context broadcasting (Heo et al. 2022)."""

import keras
from keras import ops

from keras_smallvit.utils.validation import check_input_shape
from keras_smallvit.utils.validation import check_range


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ContextBroadcasting(keras.layers.Layer):
    """Adds uniform attention to a token sequence: `x <- (1 - r) x + r mean_tokens(x)`.

    The mean runs over all tokens, class tokens included, and is taken in
    float32. This equals the output of an attention whose probabilities are
    uniform (`1/N` everywhere) mixed in at ratio `r`, at no parameter cost.
    With `learnable_scale` (the CB_S variant) the broadcast mean is scaled by
    a learned per-channel vector initialised to ones (so it starts as CB):
    `x <- (1 - r) x + r (gamma * mean_tokens(x))`.

    Args:
        ratio: `r` in `[0, 1]` (0.5 in the paper).
        learnable_scale: use the CB_S variant.
    """

    def __init__(self, ratio=0.5, learnable_scale=False, **kwargs):
        super().__init__(**kwargs)
        self.ratio = check_range("ratio", ratio, 0.0, 1.0)
        self.learnable_scale = bool(learnable_scale)

    def build(self, input_shape):
        # The mean runs over axis 1, the tokens: on a rank-2 input it would
        # average the features, on a rank-4 one only the rows.
        known = (2,) if self.learnable_scale else ()
        dim = check_input_shape(self, input_shape, ("batch", "tokens", "dim"), known=known)[-1]
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: dim} if self.learnable_scale else None)
        if self.learnable_scale:
            self.channel_scale = self.add_weight(
                name="channel_scale", shape=(input_shape[-1],), initializer="ones"
            )

    def call(self, inputs):
        mean = ops.mean(ops.cast(inputs, "float32"), axis=1, keepdims=True)
        if self.learnable_scale:
            mean = mean * ops.cast(self.channel_scale, "float32")
        mean = ops.cast(mean, inputs.dtype)
        return (1.0 - self.ratio) * inputs + self.ratio * mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(ratio=self.ratio, learnable_scale=self.learnable_scale)
        return config
