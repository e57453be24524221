"""Swin layers: shifted-window attention, its block, patch merging, position embedding."""

import keras
import numpy as np
from keras import ops

from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.attention import check_return_mode
from keras_smallvit.layers.transformer_block import TransformerBlock
from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range


def window_partition(grid, window_size):
    """`(B, H, W, C) -> (B * nW, ws * ws, C)`: non-overlapping windows, row-major.

    Windows are ordered batch first, then window row, then window column (the
    official code's order); tokens inside a window row-major.
    """
    _, height, width, channels = grid.shape
    ws = window_size
    x = ops.reshape(grid, (-1, height // ws, ws, width // ws, ws, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, ws * ws, channels))


def window_reverse(windows, window_size, height, width):
    """Inverse of `window_partition`: `(B * nW, ws * ws, C) -> (B, H, W, C)`."""
    ws = window_size
    channels = windows.shape[-1]
    x = ops.reshape(windows, (-1, height // ws, width // ws, ws, ws, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, channels))


def relative_position_index(window_size):
    """`(N, N)` int array, `N = ws * ws`: index into the `(2 ws - 1) ** 2` bias
    table of the offset between query token i and key token j of a window."""
    ws = window_size
    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
    offsets = coords[:, :, None] - coords[:, None, :] + (ws - 1)  # (2, N, N), each in [0, 2 ws - 2]
    return (offsets[0] * (2 * ws - 1) + offsets[1]).astype("int32")


def shifted_window_mask(grid_size, window_size, shift_size):
    """`(nW, N, N)` bool, True where query and key of a window came from
    different image regions after the cyclic shift (they must not attend).

    The grid rolled by `-shift_size` is cut into 3 bands per axis (`[0, H - ws)`,
    `[H - ws, H - shift)`, `[H - shift, H)`); tokens attend only within their band pair.
    """
    height, width = grid_size
    regions = np.zeros((height, width), "int32")
    def bands(size):
        return (slice(0, size - window_size), slice(size - window_size, size - shift_size), slice(size - shift_size, size))

    label = 0
    for band_h in bands(height):
        for band_w in bands(width):
            regions[band_h, band_w] = label
            label += 1
    ws = window_size
    windows = regions.reshape(height // ws, ws, width // ws, ws).transpose(0, 2, 1, 3).reshape(-1, ws * ws)
    return windows[:, :, None] != windows[:, None, :]


def check_window_args(window_size, shift_size, grid_size):
    """Validated `(window_size, shift_size, grid_size)`."""
    window_size = check_positive_int("window_size", window_size)
    if isinstance(shift_size, bool) or not isinstance(shift_size, int) or not 0 <= shift_size < window_size:
        raise ValueError(
            f"Invalid `shift_size`: {shift_size!r}. Expected an integer in "
            f"[0, window_size) = [0, {window_size})."
        )
    return window_size, shift_size, None if grid_size is None else as_pair("grid_size", grid_size)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class WindowAttention(MultiHeadSelfAttention):
    """(Shifted-)window multi-head self-attention with relative position bias (Swin).

    Takes a token sequence `(B, H * W, C)` of an `H x W` grid. With
    `shift_size > 0` the grid is first rolled by `-shift_size` on both axes
    (and rolled back at the end). It is cut into `window_size` x `window_size`
    windows; inside each window, per head,

        scores = (q * scale_h) k^T + B[relative position]

    with `B` a learned `((2 ws - 1) ** 2, heads)` table. Scores between tokens
    that come from different regions of the rolled grid (shift mask), and with
    `diagonal_mask` (LSA) each token's score with itself, are masked
    (probability exactly 0); softmax in float32; optional SATA on
    the probabilities of every window row; then `probs @ v`, the output Dense
    and dropout. `scale_h` is `head_dim ** -0.5` (or `attention_scale`), or a
    learned per-head temperature with `learnable_temperature` (LSA; it scales
    q only, so the relative bias stays unscaled, as in the official code).
    The bias and the masks come through `MultiHeadSelfAttention`'s scores
    hook (`attention_bias`), so without maps, SATA or attention dropout the
    windows take the fused `keras.ops.dot_product_attention` (the bias as its
    `bias`); the softmax and SATA are the base class's.

    Call args:
        inputs: `(B, H * W, C)`.
        return_attention_scores: also return the float32 probabilities
            `(B, num_windows, heads, ws * ws, ws * ws)` (after masks and SATA);
            `"all"`: the dict of maps of `MultiHeadSelfAttention`, in that shape.
        training: dropout switch.

    Args:
        num_heads: number of heads.
        head_dim: size of each head.
        window_size: side of a square window; must divide the grid.
        shift_size: cyclic shift in `[0, window_size)` (`window_size // 2`
            in every second Swin block).
        grid_size: `(H, W)` of the token grid, or None for a square grid
            inferred from the sequence length.
        **kwargs: `MultiHeadSelfAttention` arguments (`diagonal_mask`,
            `learnable_temperature`, `suppression`, `dropout`,
            `attention_dropout`, `use_qkv_bias`, `output_dim`,
            `attention_scale`, `temperature_multiple`) and base layer arguments.
    """

    def __init__(self, num_heads, head_dim, window_size, shift_size=0, grid_size=None, **kwargs):
        super().__init__(num_heads, head_dim, **kwargs)
        self.window_size, self.shift_size, self.grid_size = check_window_args(window_size, shift_size, grid_size)

    def _grid(self, num_tokens):
        if self.grid_size is not None:
            if self.grid_size[0] * self.grid_size[1] != num_tokens:
                raise ValueError(
                    f"Invalid `grid_size` {self.grid_size} for {num_tokens} tokens: "
                    "height * width must equal the sequence length."
                )
            return self.grid_size
        side = int(round((num_tokens or 0) ** 0.5))
        if side * side != num_tokens:
            raise ValueError(
                f"WindowAttention got {num_tokens} tokens, which is not a square "
                "grid; pass `grid_size` (height, width)."
            )
        return (side, side)

    def build(self, input_shape):
        height, width = self._grid(input_shape[1])
        ws = self.window_size
        if height % ws or width % ws:
            raise ValueError(
                f"Invalid `window_size` {ws} for the token grid {height}x{width}: "
                f"the window must divide the grid (allowed: divisors of {height} and {width})."
            )
        self._hw = (height, width)
        self._num_windows = (height // ws) * (width // ws)
        self._relative_index = relative_position_index(ws).reshape(-1)
        # A constant (not a weight): it must not count as a parameter.
        self._shift_mask = shifted_window_mask((height, width), ws, self.shift_size) if self.shift_size else None
        if self.diagonal_mask and self._shift_mask is not None:
            masked = self._shift_mask | np.eye(ws * ws, dtype=bool)[None]
            if masked.all(axis=-1).any():
                raise ValueError(
                    f"Invalid `shift_size` {self.shift_size} with `window_size` {ws} "
                    "and the LSA diagonal mask: some tokens would have nothing to "
                    "attend to (1x1 regions). Allowed: shift_size and "
                    "window_size - shift_size both >= 2, or shift_size 0."
                )
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table",
            shape=((2 * ws - 1) ** 2, self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        super().build(input_shape)

    def relative_position_bias(self):
        """`(heads, N, N)` float32 bias of every query/key pair of a window."""
        n = self.window_size**2
        bias = ops.take(self.relative_position_bias_table, self._relative_index, axis=0)
        bias = ops.transpose(ops.reshape(bias, (n, n, self.num_heads)), (2, 0, 1))
        return ops.cast(bias, "float32")

    def attention_bias(self, num_queries, num_keys):
        """The relative position bias `(1, heads, N, N)` and, in a shifted
        block, the shift mask `(num_windows, 1, N, N)` (False between tokens
        from different regions of the rolled grid; the window index varies
        fastest along the batch axis) with LSA's diagonal in it."""
        bias = self.relative_position_bias()[None]
        _, mask = super().attention_bias(num_queries, num_keys)
        if self._shift_mask is not None:
            shift = ops.convert_to_tensor(~self._shift_mask[:, None])
            mask = shift if mask is None else ops.logical_and(shift, mask)
        return bias, mask

    def call(self, inputs, return_attention_scores=False, training=None):
        height, width = self._hw
        shift = self.shift_size
        x = ops.reshape(inputs, (-1, height, width, inputs.shape[-1]))
        if shift:
            x = ops.roll(ops.roll(x, -shift, axis=1), -shift, axis=2)
        mode = check_return_mode(return_attention_scores)
        out = super().call(window_partition(x, self.window_size), return_attention_scores=mode, training=training)
        out, maps = out if mode else (out, None)
        x = window_reverse(out, self.window_size, height, width)
        if shift:
            x = ops.roll(ops.roll(x, shift, axis=1), shift, axis=2)
        out = ops.reshape(x, (-1, height * width, out.shape[-1]))
        if not mode:
            return out
        n = self.window_size**2
        return out, keras.tree.map_structure(lambda m: ops.reshape(m, (-1, self._num_windows, self.num_heads, n, n)), maps)

    def get_config(self):
        config = super().get_config()
        config.update(window_size=self.window_size, shift_size=self.shift_size, grid_size=self.grid_size)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class SwinTransformerBlock(TransformerBlock):
    """Swin block: `TransformerBlock` with (shifted-)window attention.

    `x + DP(WindowAttention(LN(x)))`, then `x + DP(MLP(LN(x)))` on the
    `(B, H * W, C)` sequence (the LayerNorms act per token, so normalising
    before or after the window partition is the same). The techniques act as
    in `TransformerBlock`: LSA gives the window attention a diagonal mask
    and a learned per-head temperature (together with the relative position
    bias and the shift mask); SATA acts on every window's probabilities; CB
    mixes in the mean over *all* tokens of the image (not per window).

    Call args:
        inputs: `(B, H * W, C)`.
        return_attention_scores: also return the probabilities
            `(B, num_windows, heads, ws * ws, ws * ws)` (float32).
        training: dropout / drop-path switch.

    Args:
        num_heads: attention heads.
        head_dim: size of each head.
        window_size: window side.
        shift_size: cyclic shift of this block (0 or `window_size // 2` in Swin).
        grid_size: `(H, W)` of the token grid, or None for a square grid.
        use_qkv_bias: bias in the qkv projection (True in Swin).
        **kwargs: the other `TransformerBlock` arguments (`mlp_ratio`,
            `techniques`, `drop_path_rate`, `dropout`, `attention_dropout`,
            `layer_norm_epsilon`, `seed`).
    """

    def __init__(self, num_heads, head_dim, window_size=4, shift_size=0, grid_size=None, use_qkv_bias=True, **kwargs):
        super().__init__(num_heads, head_dim, use_qkv_bias=use_qkv_bias, **kwargs)
        self.window_size, self.shift_size, self.grid_size = check_window_args(window_size, shift_size, grid_size)

    def make_attention_layer(self):
        return WindowAttention(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            window_size=self.window_size,
            shift_size=self.shift_size,
            grid_size=self.grid_size,
            **self.techniques.attention_options(),
            **self.attention_arguments(),
        )

    def get_config(self):
        config = super().get_config()
        config.update(window_size=self.window_size, shift_size=self.shift_size, grid_size=self.grid_size)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class PatchMerging(keras.layers.Layer):
    """Swin patch merging: `(B, H * W, C) -> (B, H/2 * W/2, output_dim)`.

    Each 2x2 neighbourhood is concatenated on the channel axis in the
    official order (rows, cols) = (0, 0), (1, 0), (0, 1), (1, 1), normalised
    with a LayerNorm over the `4C` features and projected by a Dense without
    bias.

    Args:
        output_dim: output size (default `2 * C`).
        grid_size: `(H, W)`, or None for a square grid; both must be even.
        layer_norm_epsilon: LayerNorm epsilon (PyTorch's default, 1e-5).
    """

    def __init__(self, output_dim=None, grid_size=None, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = None if output_dim is None else check_positive_int("output_dim", output_dim)
        self.grid_size = None if grid_size is None else as_pair("grid_size", grid_size)
        self.layer_norm_epsilon = check_range("layer_norm_epsilon", layer_norm_epsilon, 0.0, None, low_inclusive=False)

    def _grid(self, num_tokens):
        if self.grid_size is not None:
            height, width = self.grid_size
        else:
            height = width = int(round((num_tokens or 0) ** 0.5))
        if height * width != num_tokens or height % 2 or width % 2:
            raise ValueError(
                f"PatchMerging needs an even token grid matching the sequence: got "
                f"{num_tokens} tokens and `grid_size` {self.grid_size or (height, width)}. "
                "Allowed: grid_size with even height and width, height * width = tokens."
            )
        return height, width

    def build(self, input_shape):
        self._hw = self._grid(input_shape[1])
        channels = input_shape[-1]
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )
        self.layer_norm.build((None, None, 4 * channels))
        self.reduction = keras.layers.Dense(
            self.output_dim or 2 * channels, use_bias=False, dtype=self.dtype_policy, name="reduction"
        )
        self.reduction.build((None, None, 4 * channels))

    def call(self, inputs):
        height, width = self._hw
        channels = inputs.shape[-1]
        x = ops.reshape(inputs, (-1, height // 2, 2, width // 2, 2, channels))  # (B, h, dy, w, dx, C)
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))  # column offset outer, row offset inner
        x = ops.reshape(x, (-1, (height // 2) * (width // 2), 4 * channels))
        return self.reduction(self.layer_norm(x))

    def compute_output_shape(self, input_shape):
        height, width = self._grid(input_shape[1])
        return (input_shape[0], (height // 2) * (width // 2), self.output_dim or 2 * input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, grid_size=self.grid_size, layer_norm_epsilon=self.layer_norm_epsilon)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class AbsolutePositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding `(1, N, D)` to a token sequence (no class token).

    Initialised from a truncated normal with `initializer_stddev` (0.02, as
    Swin's `absolute_pos_embed`).

    Args:
        initializer_stddev: standard deviation of the initial values, `> 0`.
    """

    def __init__(self, initializer_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_stddev = check_range(
            "initializer_stddev", initializer_stddev, 0.0, None, low_inclusive=False
        )

    def build(self, input_shape):
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_stddev),
        )

    def call(self, tokens):
        return tokens + ops.cast(self.position_embedding, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(initializer_stddev=self.initializer_stddev)
        return config
