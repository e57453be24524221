"""Patch tokenizers: plain ViT patch embedding and shifted patch tokenization."""

import keras
from keras import ops

from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_axis_size
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_input_shape
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

# (dy, dx) of every shifted copy: output[i, j] = input[i + dy, j + dx], zero
# outside. The names follow the official SPT code (its "left-up" copy reads
# from the upper left, i.e. the content moves down and right), and so does
# the order of the copies on the channel axis.
SHIFT_DIRECTIONS = {
    "diagonal": ((-1, -1), (-1, 1), (1, -1), (1, 1)),
    "cardinal": ((0, -1), (0, 1), (-1, 0), (1, 0)),
}
SHIFT_DIRECTIONS["all"] = SHIFT_DIRECTIONS["diagonal"] + SHIFT_DIRECTIONS["cardinal"]


def patchify(images, patch_size):
    """`(B, H, W, C) -> (B, H/P * W/P, P * P * C)`, patch pixels in (row, col, channel) order.

    The order matches `einops` `'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'` of
    the official code, so its Dense weights port one to one.
    """
    ph, pw = patch_size
    _, height, width, channels = images.shape
    gh, gw = height // ph, width // pw
    x = ops.reshape(images, (-1, gh, ph, gw, pw, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, gh * gw, ph * pw * channels))


def _check_grid(layer_name, shape, patch_size):
    _, height, width, _ = shape
    for dim_name, size, p in (("height", height, patch_size[0]), ("width", width, patch_size[1])):
        if size is None:
            raise ValueError(f"{layer_name} needs a static input {dim_name}; got shape {shape}.")
        if size % p:
            raise ValueError(
                f"Invalid `patch_size` {patch_size} for input {dim_name} {size}: "
                f"the image size must be divisible by the patch size "
                f"(allowed patch sizes divide {size})."
            )


@keras.saving.register_keras_serializable(package="keras_smallvit")
class PatchEmbedding(keras.layers.Layer):
    """Plain ViT tokenization: non-overlapping patches, flattened, then a Dense.

    `(B, H, W, C) -> (B, H/P * W/P, hidden_dim)`. No LayerNorm, as in the
    official small-dataset ViT code.

    Args:
        patch_size: int or `(height, width)` of a patch.
        hidden_dim: size of each output token.
    """

    def __init__(self, patch_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = as_pair("patch_size", patch_size)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)

    def build(self, input_shape):
        check_input_shape(self, input_shape, ("batch", "height", "width", "channels"), known=(3,), argument="images")
        _check_grid("PatchEmbedding", input_shape, self.patch_size)
        self.input_spec = keras.InputSpec(ndim=4)
        # Checked on every call: images of another channel count would reach
        # the projection as patches of another size (an unclear error there).
        self.channels = input_shape[-1]
        patch_dim = self.patch_size[0] * self.patch_size[1] * input_shape[-1]
        self.projection = keras.layers.Dense(
            self.hidden_dim, dtype=self.dtype_policy, name="projection"
        )
        self.projection.build((None, None, patch_dim))

    def call(self, images):
        check_axis_size(self, images.shape, -1, "channels", self.channels, argument="images")
        return self.projection(patchify(images, self.patch_size))

    def compute_output_shape(self, input_shape):
        _, h, w, _ = input_shape
        n = (h // self.patch_size[0]) * (w // self.patch_size[1])
        return (input_shape[0], n, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, hidden_dim=self.hidden_dim)
        return config


def shift_and_concat(images, shift, directions):
    """Concatenates `images` with its zero-padded shifted copies on the channel axis.

    Args:
        images: `(B, H, W, C)`.
        shift: shift in pixels (or grid cells).
        directions: a key of `SHIFT_DIRECTIONS`.

    Returns:
        `(B, H, W, (1 + num_directions) * C)`: the input first, then one copy per
        direction in `SHIFT_DIRECTIONS[directions]` order.
    """
    _, height, width, _ = images.shape
    padded = ops.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    copies = [images]
    for dy, dx in SHIFT_DIRECTIONS[directions]:
        top, left = shift + dy * shift, shift + dx * shift
        copies.append(padded[:, top : top + height, left : left + width, :])
    return ops.concatenate(copies, axis=-1)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ShiftedPatchTokenization(keras.layers.Layer):
    """Shifted Patch Tokenization (SPT, Lee et al. 2021).

    Shifts the input by `int(patch_size * shift_ratio)` in each direction of
    `shift_directions` (zero padding, cropped back to the input size),
    concatenates the shifted copies with the input on the channel axis, cuts
    non-overlapping patches, flattens each, applies LayerNorm over the
    flattened patch and projects it with a Dense to `hidden_dim`.

    Two input forms:
    - Images or a token grid `(B, H, W, C)` -> `(B, H/P * W/P, hidden_dim)`:
      the tokenizer of a ViT.
    - A token sequence `(B, num_prefix_tokens + h * w, C)` with a square grid
      of visual tokens after `num_prefix_tokens` class tokens: the pooling
      layer of PiT / Swin (`S_pool`). The visual tokens are reshaped to the
      grid and tokenized as above; the prefix tokens go through their own
      Dense. Output `(B, num_prefix_tokens + h/P * w/P, hidden_dim)`.

    Args:
        patch_size: int or `(height, width)`; the merging size when pooling.
        hidden_dim: size of each output token.
        shift_directions: `"diagonal"` (the paper's default, 4 copies),
            `"cardinal"` (4) or `"all"` (8).
        shift_ratio: shift as a fraction of the patch size, in `(0, 1]`.
        num_prefix_tokens: class tokens in front of a token sequence (sequence
            input only).
        layer_norm_epsilon: LayerNorm epsilon (PyTorch's default, 1e-5).
    """

    def __init__(
        self,
        patch_size,
        hidden_dim,
        shift_directions="diagonal",
        shift_ratio=0.5,
        num_prefix_tokens=0,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = as_pair("patch_size", patch_size)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.shift_directions = check_choice(
            "shift_directions", shift_directions, tuple(SHIFT_DIRECTIONS)
        )
        self.shift_ratio = check_range(
            "shift_ratio", shift_ratio, 0.0, 1.0, low_inclusive=False
        )
        self.shift = int(min(self.patch_size) * self.shift_ratio)
        if self.shift < 1:
            raise ValueError(
                f"Invalid `shift_ratio` {shift_ratio} for `patch_size` "
                f"{self.patch_size}: the shift int(patch_size * shift_ratio) is 0. "
                f"Allowed: shift_ratio >= {1 / min(self.patch_size)} for this patch size."
            )
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(
                f"Invalid `num_prefix_tokens`: {num_prefix_tokens!r}. "
                "Expected an integer >= 0."
            )
        self.num_prefix_tokens = num_prefix_tokens
        self.layer_norm_epsilon = layer_norm_epsilon
        self.num_copies = 1 + len(SHIFT_DIRECTIONS[self.shift_directions])

    def _grid_shape(self, input_shape):
        if len(input_shape) == 4:
            return tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(
                "Invalid `inputs` for ShiftedPatchTokenization: expected a tensor of shape (batch, "
                f"height, width, channels) or (batch, tokens, channels); got shape {tuple(input_shape)} "
                f"(rank {len(input_shape)})."
            )
        num_visual = input_shape[1] - self.num_prefix_tokens
        side = int(round(num_visual**0.5))
        if side * side != num_visual:
            raise ValueError(
                f"ShiftedPatchTokenization got {num_visual} visual tokens "
                f"(tokens {input_shape[1]} - num_prefix_tokens "
                f"{self.num_prefix_tokens}), which is not a square grid."
            )
        return (input_shape[0], side, side, input_shape[2])

    def build(self, input_shape):
        if len(input_shape) == 4 and self.num_prefix_tokens:
            raise ValueError(
                "`num_prefix_tokens` applies to token sequences (batch, tokens, "
                f"channels) only; got a 4D input {input_shape}."
            )
        grid_shape = self._grid_shape(input_shape)
        if grid_shape[-1] is None:
            raise ValueError(
                f"Invalid `inputs` for ShiftedPatchTokenization: the channels axis must have a static "
                f"size; got shape {tuple(input_shape)}."
            )
        _check_grid("ShiftedPatchTokenization", grid_shape, self.patch_size)
        # Checked on every call: another rank would take the other input form,
        # another channel count reach the LayerNorm as patches of another size.
        self.input_spec = keras.InputSpec(ndim=len(input_shape))
        self.channels = grid_shape[-1]
        patch_dim = self.patch_size[0] * self.patch_size[1] * self.num_copies * grid_shape[-1]
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )
        self.layer_norm.build((None, None, patch_dim))
        self.projection = keras.layers.Dense(
            self.hidden_dim, dtype=self.dtype_policy, name="projection"
        )
        self.projection.build((None, None, patch_dim))
        if self.num_prefix_tokens:
            self.prefix_projection = keras.layers.Dense(
                self.hidden_dim, dtype=self.dtype_policy, name="prefix_projection"
            )
            self.prefix_projection.build((None, None, grid_shape[-1]))

    def call(self, inputs):
        check_axis_size(self, inputs.shape, -1, "channels", self.channels)
        prefix = None
        if len(inputs.shape) == 3:
            _, h, w, c = self._grid_shape(inputs.shape)
            if self.num_prefix_tokens:
                prefix = inputs[:, : self.num_prefix_tokens, :]
                inputs = inputs[:, self.num_prefix_tokens :, :]
            inputs = ops.reshape(inputs, (-1, h, w, c))
        x = shift_and_concat(inputs, self.shift, self.shift_directions)
        x = patchify(x, self.patch_size)
        x = self.projection(self.layer_norm(x))
        if prefix is not None:
            x = ops.concatenate([self.prefix_projection(prefix), x], axis=1)
        return x

    def compute_output_shape(self, input_shape):
        _, h, w, _ = self._grid_shape(input_shape)
        n = (h // self.patch_size[0]) * (w // self.patch_size[1])
        return (input_shape[0], self.num_prefix_tokens + n, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_size=self.patch_size,
            hidden_dim=self.hidden_dim,
            shift_directions=self.shift_directions,
            shift_ratio=self.shift_ratio,
            num_prefix_tokens=self.num_prefix_tokens,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
