"""PiT pooling by depthwise convolution."""

import keras
from keras import ops

from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_positive_int


def conv_pooling_grid(grid_size, kernel_size=3, strides=2):
    """Output grid of `DepthwiseConvPooling`: `floor((n + 2 (k // 2) - k) / s) + 1` per axis."""
    padding = kernel_size // 2
    return tuple((n + 2 * padding - kernel_size) // strides + 1 for n in grid_size)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class DepthwiseConvPooling(keras.layers.Layer):
    """PiT pooling: depthwise strided convolution on the token grid, class tokens through a Dense.

    `(B, P + H * W, C) -> (B, P + H' * W', output_dim)`. The visual tokens
    (after `num_prefix_tokens` = P class tokens) are reshaped to their grid,
    zero-padded by `kernel_size // 2` on every side (PyTorch's symmetric
    `padding=1`, not Keras' `"same"`, which pads one side only at stride 2),
    convolved depthwise (`kernel_size`, `strides`, each input channel giving
    `output_dim / C` channels, with bias), then mixed by a pointwise (1x1)
    Dense to `output_dim` (the small-dataset code's; `pointwise=False`:
    none, the ImageNet PiT's `conv_head_pooling`). The class tokens go
    through their own Dense `C -> output_dim`. As in the official PiT code.

    Args:
        output_dim: output size, a multiple of the input size (default `2 * C`).
        grid_size: `(H, W)` of the visual tokens, or None for a square grid.
        num_prefix_tokens: class tokens in front of the visual tokens.
        kernel_size: depthwise kernel side (3).
        strides: depthwise stride (2).
        pointwise: the 1x1 Dense after the depthwise convolution.
    """

    def __init__(
        self, output_dim=None, grid_size=None, num_prefix_tokens=1, kernel_size=3, strides=2, pointwise=True, **kwargs
    ):
        super().__init__(**kwargs)
        self.output_dim = None if output_dim is None else check_positive_int("output_dim", output_dim)
        self.grid_size = None if grid_size is None else as_pair("grid_size", grid_size)
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f"Invalid `num_prefix_tokens`: {num_prefix_tokens!r}. Expected an integer >= 0.")
        self.num_prefix_tokens = num_prefix_tokens
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.strides = check_positive_int("strides", strides)
        if not isinstance(pointwise, bool):
            raise ValueError(f"Invalid `pointwise` {pointwise!r}. Allowed values: True, False.")
        self.pointwise_dense = pointwise

    def _grid(self, num_tokens):
        num_visual = (num_tokens or 0) - self.num_prefix_tokens
        if self.grid_size is not None:
            height, width = self.grid_size
        else:
            height = width = int(round(max(num_visual, 0) ** 0.5))
        if height * width != num_visual or num_visual <= 0:
            raise ValueError(
                f"DepthwiseConvPooling got {num_visual} visual tokens (tokens {num_tokens} - "
                f"num_prefix_tokens {self.num_prefix_tokens}), which do not match `grid_size` "
                f"{self.grid_size or 'None (a square grid)'}. Allowed: height * width = visual tokens."
            )
        return height, width

    def build(self, input_shape):
        self._hw = self._grid(input_shape[1])
        channels = input_shape[-1]
        output_dim = self.output_dim or 2 * channels
        if output_dim % channels:
            raise ValueError(
                f"Invalid `output_dim` {output_dim} for {channels} input channels: a "
                f"depthwise convolution needs a multiple of {channels}."
            )
        policy = self.dtype_policy
        self.depthwise = keras.layers.DepthwiseConv2D(
            self.kernel_size,
            strides=self.strides,
            padding="valid",
            depth_multiplier=output_dim // channels,
            data_format="channels_last",
            dtype=policy,
            name="depthwise",
        )
        pad = self.kernel_size // 2
        self.depthwise.build((None, self._hw[0] + 2 * pad, self._hw[1] + 2 * pad, channels))
        if self.pointwise_dense:
            self.pointwise = keras.layers.Dense(output_dim, dtype=policy, name="pointwise")
            self.pointwise.build((None, None, output_dim))
        if self.num_prefix_tokens:
            self.prefix_projection = keras.layers.Dense(output_dim, dtype=policy, name="prefix_projection")
            self.prefix_projection.build((None, None, channels))

    def call(self, inputs):
        if inputs.shape[0] == 0:
            # An empty batch, known here when eager: TensorFlow's depthwise
            # convolution (outside XLA) returns its empty input unchanged, in
            # the input's shape, which its bias does not fit.
            return ops.zeros(self.compute_output_shape(tuple(inputs.shape)), dtype=self.compute_dtype)
        height, width = self._hw
        channels = inputs.shape[-1]
        prefix = inputs[:, : self.num_prefix_tokens]
        x = ops.reshape(inputs[:, self.num_prefix_tokens :], (-1, height, width, channels))
        pad = self.kernel_size // 2
        x = self.depthwise(ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))))
        if self.pointwise_dense:
            x = self.pointwise(x)
        out_h, out_w = conv_pooling_grid((height, width), self.kernel_size, self.strides)
        x = ops.reshape(x, (-1, out_h * out_w, x.shape[-1]))
        if self.num_prefix_tokens:
            x = ops.concatenate([self.prefix_projection(prefix), x], axis=1)
        return x

    def compute_output_shape(self, input_shape):
        height, width = self._grid(input_shape[1])
        out_h, out_w = conv_pooling_grid((height, width), self.kernel_size, self.strides)
        return (input_shape[0], self.num_prefix_tokens + out_h * out_w, self.output_dim or 2 * input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            grid_size=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            kernel_size=self.kernel_size,
            strides=self.strides,
        )
        if not self.pointwise_dense:  # only when off: configs saved before it load unchanged
            config.update(pointwise=False)
        return config
