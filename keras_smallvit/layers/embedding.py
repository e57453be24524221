"""Class token and learned position embedding."""

import keras
from keras import ops

from keras_smallvit.utils.validation import check_input_shape
from keras_smallvit.utils.validation import check_range


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ClassTokenAndPositionEmbedding(keras.layers.Layer):
    """Prepends a learned class token and adds a learned position embedding.

    `(B, N, D) -> (B, 1 + N, D)`; the position embedding covers the class
    token too. Both start from a normal distribution with
    `initializer_stddev` (1.0, like `torch.randn` in the official code).

    Args:
        initializer_stddev: standard deviation of the initial values, `> 0`.
    """

    def __init__(self, initializer_stddev=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initializer_stddev = check_range(
            "initializer_stddev", initializer_stddev, 0.0, None, low_inclusive=False
        )

    def build(self, input_shape):
        _, num_tokens, dim = check_input_shape(self, input_shape, ("batch", "tokens", "dim"), known=(1, 2))
        # The position embedding fits `num_tokens` tokens of size `dim` only.
        self.input_spec = keras.InputSpec(shape=(None, num_tokens, dim))
        init = keras.initializers.RandomNormal(stddev=self.initializer_stddev)
        self.class_token = self.add_weight(name="class_token", shape=(1, 1, dim), initializer=init)
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=(1, num_tokens + 1, dim), initializer=init
        )

    def call(self, tokens):
        class_token = ops.cast(self.class_token, tokens.dtype)
        class_token = ops.broadcast_to(class_token, (ops.shape(tokens)[0], 1, tokens.shape[-1]))
        x = ops.concatenate([class_token, tokens], axis=1)
        return x + ops.cast(self.position_embedding, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] + 1, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(initializer_stddev=self.initializer_stddev)
        return config
