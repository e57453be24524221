"""T2T-ViT layers: soft split, patch shifting, token transformer, T2T block and embedding."""

import keras
import numpy as np
from keras import ops

from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.attention import attention_output_spec
from keras_smallvit.layers.attention import check_return_mode
from keras_smallvit.layers.attention import with_attention_scores
from keras_smallvit.layers.patching import SHIFT_DIRECTIONS
from keras_smallvit.layers.patching import shift_and_concat
from keras_smallvit.layers.stochastic_depth import StochasticDepth
from keras_smallvit.layers.techniques import TechniqueSpec
from keras_smallvit.layers.transformer_block import TransformerBlock
from keras_smallvit.utils import legacy
from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

ATTENTION_RESIDUALS = ("none", "value", "input")


def soft_split_output_size(size, kernel_size, stride, padding):
    """Output length of one axis of a soft split (as `torch.nn.Unfold`)."""
    return (size + 2 * padding - kernel_size) // stride + 1


@keras.saving.register_keras_serializable(package="keras_smallvit")
class SoftSplit(keras.layers.Layer):
    """T2T soft split: overlapping patches, flattened (`torch.nn.Unfold`).

    `(B, H, W, C) -> (B, H' * W', C * kh * kw)`: zero padding of `padding`
    pixels on every side, then a `kh x kw` window every `stride` pixels,
    `H' = (H + 2 * padding - kh) // stride + 1`. Tokens are in row-major
    order; each token's features are in `(channel, row, column)` order like
    `Unfold`'s, so official weights port one to one.

    Args:
        kernel_size: int or `(height, width)` of the window.
        strides: int or `(height, width)` step between windows.
        padding: zero padding on each side, `>= 0`.
    """

    def __init__(self, kernel_size=3, strides=2, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = as_pair("kernel_size", kernel_size)
        self.strides = as_pair("strides", strides)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"Invalid `padding`: {padding!r}. Expected an integer >= 0.")
        self.padding = padding

    def _output_grid(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"SoftSplit expects (batch, height, width, channels); got {input_shape}."
            )
        grid = []
        for axis, size, k, s in zip(("height", "width"), input_shape[1:3], self.kernel_size, self.strides):
            if size is None:
                raise ValueError(f"SoftSplit needs a static input {axis}; got shape {input_shape}.")
            out = soft_split_output_size(size, k, s, self.padding)
            if out < 1:
                raise ValueError(
                    f"Invalid `kernel_size` {self.kernel_size} for input {axis} {size} with "
                    f"padding {self.padding}: the window must fit in the padded input."
                )
            grid.append(out)
        return tuple(grid)

    def call(self, images):
        (kh, kw), (sh, sw), p = self.kernel_size, self.strides, self.padding
        out_h, out_w = self._output_grid(images.shape)
        channels = images.shape[-1]
        x = ops.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        # One strided slice per window offset (i, j): (B, H', W', C) each.
        offsets = [
            x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ]
        x = ops.stack(offsets, axis=-1)  # (B, H', W', C, kh * kw): Unfold's feature order
        return ops.reshape(x, (-1, out_h * out_w, channels * kh * kw))

    def compute_output_shape(self, input_shape):
        out_h, out_w = self._output_grid(input_shape)
        return (input_shape[0], out_h * out_w, input_shape[-1] * self.kernel_size[0] * self.kernel_size[1])

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, strides=self.strides, padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class PatchShifting(keras.layers.Layer):
    """The shifting half of SPT: the image and its shifted copies on the channel axis.

    `(B, H, W, C) -> (B, H, W, (1 + num_directions) * C)`: zero-padded copies
    shifted by `shift` pixels in each of `shift_directions` (the order of
    `ShiftedPatchTokenization`). T2T's SPT puts this in front of the first
    soft split, which then does the patching (official code: 1 pixel, the
    diagonal directions, no LayerNorm of its own).

    Args:
        shift: shift in pixels, `>= 1`.
        shift_directions: `"diagonal"` (4 copies), `"cardinal"` (4) or `"all"` (8).
    """

    def __init__(self, shift=1, shift_directions="diagonal", **kwargs):
        super().__init__(**kwargs)
        self.shift = check_positive_int("shift", shift)
        self.shift_directions = check_choice("shift_directions", shift_directions, tuple(SHIFT_DIRECTIONS))

    def call(self, images):
        return shift_and_concat(images, self.shift, self.shift_directions)

    def compute_output_shape(self, input_shape):
        copies = 1 + len(SHIFT_DIRECTIONS[self.shift_directions])
        return (*input_shape[:-1], copies * input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(shift=self.shift, shift_directions=self.shift_directions)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class T2TAttention(MultiHeadSelfAttention):
    """`MultiHeadSelfAttention` with the official T2T code's skip connection inside.

    - `residual="value"`: output `v + Proj(A v)` (`v` with its heads merged),
      the token transformer's attention, whose output size `heads *
      head_dim` differs from its input size;
    - `residual="input"`: output `x + Proj(A v)`, `x` the layer's input. The
      official small-dataset code's main T2T blocks do this (its token-
      attention class shadows the standard one of the same name), so a block
      computes `x + DP(LN(x) + Proj(A v))`;
    - `residual="none"`: the parent layer.

    Args:
        residual: `"none"`, `"value"` or `"input"`.
        Other args: those of `MultiHeadSelfAttention` (`output_dim` is
            `heads * head_dim` with `"value"`, the input size otherwise).
    """

    def __init__(self, num_heads, head_dim, residual="none", **kwargs):
        residual = check_choice("residual", residual, ATTENTION_RESIDUALS)
        if residual != "none" and kwargs.get("output_dim") is not None:
            expected = num_heads * head_dim if residual == "value" else "the input size"
            if residual == "input" or kwargs["output_dim"] != expected:
                raise ValueError(
                    f"Invalid `output_dim` {kwargs['output_dim']} with residual={residual!r}: "
                    f"the output size is {expected}. Allowed: None."
                )
        if residual == "value":
            kwargs["output_dim"] = num_heads * head_dim
        super().__init__(num_heads, head_dim, **kwargs)
        self.residual = residual

    def call(self, inputs, return_attention_scores=False, training=None):
        mode = check_return_mode(return_attention_scores)
        if self.residual != "value":
            out, maps = super().call(inputs, return_attention_scores="all", training=training)
            if self.residual == "input":
                out = out + inputs
        else:
            query, key, value = self.query_key_value(inputs)
            out, maps = self.attend(query, key, value, training=training)
            out = self.output_dropout_layer(self.output_projection(out), training=training)
            out = out + self.merge_heads(value)
        return with_attention_scores(out, maps, mode)

    def get_config(self):
        config = super().get_config()
        config.update(residual=self.residual)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
@legacy.loads_old_configs("techniques")
class TokenTransformer(keras.layers.Layer):
    """The T2T module's transformer: `y = Attn(LN(x))`, then `y + DP(MLP(LN(y)))`.

    `(B, N, C) -> (B, N, token_dim)`. `Attn` is `T2TAttention` with the value
    skip connection (`v + Proj(A v)`), as in T2T-ViT: the input size `C`
    (the soft split's `C_in * k * k`) differs from `token_dim`. The MLP is
    Dense(token_dim * mlp_ratio, GELU) -> Dropout -> Dense(token_dim) ->
    Dropout.

    Args:
        token_dim: output size (64); also the total attention size.
        num_heads: attention heads (1 in T2T-ViT).
        mlp_ratio: MLP hidden size / token_dim (1.0).
        techniques: a `TechniqueSpec` (LSA and SATA act here).
        attention_scale: softmax scale (initial temperature with LSA), or None
            for the official `(C // num_heads) ** -0.5`, from the *input* size.
        drop_path_rate: stochastic depth rate of the MLP branch.
        dropout: dropout after the attention projection and in the MLP.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon.
        seed: seed of the drop-path randomness.
    """

    def __init__(
        self,
        token_dim=64,
        num_heads=1,
        mlp_ratio=1.0,
        techniques=None,
        attention_scale=None,
        drop_path_rate=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-5,
        seed=None,
        **kwargs,
    ):
        legacy.check_no_old_arguments(type(self), kwargs)
        techniques = TechniqueSpec.resolve(techniques)
        super().__init__(**kwargs)
        self.techniques = techniques
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if token_dim % num_heads:
            raise ValueError(
                f"Invalid `num_heads` {num_heads}: it must divide `token_dim` ({token_dim})."
            )
        self.mlp_ratio = check_range("mlp_ratio", mlp_ratio, 0.0, None, low_inclusive=False)
        self.attention_scale = (
            None
            if attention_scale is None
            else check_range("attention_scale", attention_scale, 0.0, None, low_inclusive=False)
        )
        self.drop_path_rate = check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_inclusive=False)
        self.dropout = check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.attention_dropout = check_range(
            "attention_dropout", attention_dropout, 0.0, 1.0, high_inclusive=False
        )
        self.layer_norm_epsilon = layer_norm_epsilon
        self.seed = seed

    def build(self, input_shape):
        dim = input_shape[-1]
        policy = self.dtype_policy
        eps = self.layer_norm_epsilon
        output_shape = (*input_shape[:-1], self.token_dim)
        mlp_dim = int(self.token_dim * self.mlp_ratio)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=eps, dtype=policy, name="attention_norm")
        self.attention_norm.build(input_shape)
        self.attention_layer = T2TAttention(
            self.num_heads,
            self.token_dim // self.num_heads,
            residual="value",
            **self.techniques.attention_options(),
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            attention_scale=self.attention_scale or (dim // self.num_heads) ** -0.5,
            dtype=policy,
            name="attention",
        )
        self.attention_layer.build(input_shape)
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=eps, dtype=policy, name="mlp_norm")
        self.mlp_norm.build(output_shape)
        self.mlp_dense_1 = keras.layers.Dense(mlp_dim, activation="gelu", dtype=policy, name="mlp_dense_1")
        self.mlp_dense_1.build(output_shape)
        self.mlp_dense_2 = keras.layers.Dense(self.token_dim, dtype=policy, name="mlp_dense_2")
        self.mlp_dense_2.build((*input_shape[:-1], mlp_dim))
        self.mlp_dropout_1 = keras.layers.Dropout(self.dropout, dtype=policy)
        self.mlp_dropout_2 = keras.layers.Dropout(self.dropout, dtype=policy)
        self.drop_path = StochasticDepth(self.drop_path_rate, seed=self.seed, dtype=policy, name="drop_path")
        # Built here: a layer not built when the model is makes Keras run the whole
        # model eagerly once before its first compiled predict/fit step.
        self.drop_path.build(output_shape)

    def call(self, inputs, return_attention_scores=False, training=None):
        mode = check_return_mode(return_attention_scores)
        x, maps = self.attention_layer(self.attention_norm(inputs), return_attention_scores="all", training=training)
        branch = self.mlp_dropout_1(self.mlp_dense_1(self.mlp_norm(x)), training=training)
        branch = self.mlp_dropout_2(self.mlp_dense_2(branch), training=training)
        x = x + self.drop_path(branch, training=training)
        return with_attention_scores(x, maps, mode)

    def compute_output_spec(self, inputs, return_attention_scores=False, training=None):
        # Shapes without tracing `call` (keeps model construction fast).
        batch, num_tokens = inputs.shape[0], inputs.shape[1]
        out = keras.KerasTensor((batch, num_tokens, self.token_dim), dtype=self.compute_dtype)
        return attention_output_spec(out, (batch, self.num_heads, num_tokens, num_tokens), return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update(
            token_dim=self.token_dim,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            techniques=self.techniques.get_config(),
            attention_scale=self.attention_scale,
            drop_path_rate=self.drop_path_rate,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class T2TBlock(TransformerBlock):
    """`TransformerBlock` whose attention may add its own input (official T2T code).

    With `attention_input_residual=True` (the official small-dataset code)
    the attention branch is `LN(x) + Proj(A v)`, so the block computes
    `x + DP(LN(x) + Proj(A v))`, then the MLP branch as usual; with False it
    is the standard pre-norm block of T2T-ViT.

    Args:
        attention_input_residual: see above.
        Other args: those of `TransformerBlock`.
    """

    def __init__(self, num_heads, head_dim, attention_input_residual=True, **kwargs):
        super().__init__(num_heads, head_dim, **kwargs)
        self.attention_input_residual = bool(attention_input_residual)

    def make_attention_layer(self):
        return T2TAttention(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            residual="input" if self.attention_input_residual else "none",
            **self.techniques.attention_options(),
            **self.attention_arguments(),
        )

    def compute_output_spec(self, inputs, return_attention_scores=False, training=None):
        # Shapes without tracing `call` (keeps model construction fast).
        out = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        n = inputs.shape[1]
        return attention_output_spec(out, (inputs.shape[0], self.num_heads, n, n), return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update(attention_input_residual=self.attention_input_residual)
        return config


def sinusoid_table(num_positions, dim):
    """The fixed sinusoid position table of T2T-ViT (`(num_positions, dim)`):
    position `p`, channel `j`: `sin` (even `j`) or `cos` (odd `j`) of
    `p / 10000 ** (2 * (j // 2) / dim)`."""
    positions = np.arange(num_positions, dtype="float64")[:, None]
    exponents = 2 * (np.arange(dim) // 2) / dim
    angles = positions / np.power(10000.0, exponents)[None, :]
    return np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ClassTokenAndSinusoidalPositionEmbedding(keras.layers.Layer):
    """Prepends a learned class token and adds a fixed sinusoid position table.

    `(B, N, D) -> (B, 1 + N, D)` (T2T-ViT). The class token starts from a
    truncated normal with `initializer_stddev` (0.02); the table (position 0
    for the class token) is a non-trainable weight, as in the official code
    (where it counts as a parameter).

    Args:
        initializer_stddev: standard deviation of the class token's initial
            values, `> 0`.
    """

    def __init__(self, initializer_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_stddev = check_range(
            "initializer_stddev", initializer_stddev, 0.0, None, low_inclusive=False
        )

    def build(self, input_shape):
        _, num_tokens, dim = input_shape
        self.class_token = self.add_weight(
            name="class_token",
            shape=(1, 1, dim),
            initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_stddev),
        )
        table = sinusoid_table(num_tokens + 1, dim)[None]
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=table.shape,
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(table, dtype=dtype),
            trainable=False,
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


def official_drop_path_rates(drop_path_rate, depth):
    """T2T-ViT's linear rule: block `i` of `depth` gets `rate * i / (depth - 1)`."""
    if depth == 1:
        return [0.0]
    return [drop_path_rate * i / (depth - 1) for i in range(depth)]

