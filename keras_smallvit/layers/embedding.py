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
    With `distillation_token` a second learned token follows the class
    token (DeiT's distillation token, Touvron et al. 2021): `(B, 2 + N, D)`,
    the position embedding covering both, as in DeiT's code.

    Args:
        initializer_stddev: standard deviation of the initial values, `> 0`.
        distillation_token: add DeiT's distillation token after the class token.
    """

    def __init__(self, initializer_stddev=1.0, distillation_token=False, **kwargs):
        super().__init__(**kwargs)
        self.initializer_stddev = check_range(
            "initializer_stddev", initializer_stddev, 0.0, None, low_inclusive=False
        )
        if not isinstance(distillation_token, bool):
            raise ValueError(f"Invalid `distillation_token` {distillation_token!r}. Allowed values: True, False.")
        self.distillation_token = distillation_token

    @property
    def num_prefix_tokens(self):
        """Tokens in front of the visual tokens: the class token (and the distillation token)."""
        return 2 if self.distillation_token else 1

    def build(self, input_shape):
        _, num_tokens, dim = check_input_shape(self, input_shape, ("batch", "tokens", "dim"), known=(1, 2))
        # The position embedding fits `num_tokens` tokens of size `dim` only.
        self.input_spec = keras.InputSpec(shape=(None, num_tokens, dim))
        init = keras.initializers.RandomNormal(stddev=self.initializer_stddev)
        self.class_token = self.add_weight(name="class_token", shape=(1, 1, dim), initializer=init)
        if self.distillation_token:
            self.distillation_token_weight = self.add_weight(
                name="distillation_token", shape=(1, 1, dim), initializer=init
            )
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=(1, num_tokens + self.num_prefix_tokens, dim), initializer=init
        )

    def call(self, tokens):
        prefix = [self.class_token] + ([self.distillation_token_weight] if self.distillation_token else [])
        shape = (ops.shape(tokens)[0], 1, tokens.shape[-1])
        prefix = [ops.broadcast_to(ops.cast(token, tokens.dtype), shape) for token in prefix]
        x = ops.concatenate([*prefix, tokens], axis=1)
        return x + ops.cast(self.position_embedding, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] + self.num_prefix_tokens, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(initializer_stddev=self.initializer_stddev)
        if self.distillation_token:  # only when on: configs saved before it load unchanged
            config.update(distillation_token=True)
        return config
