"""What the transformer backbones share: argument checks, the tokenizer
choice, config plumbing and the class-token map override point."""

import keras

from keras_smallvit.layers.attention import suppression_config
from keras_smallvit.layers.patching import SHIFT_DIRECTIONS
from keras_smallvit.layers.patching import PatchEmbedding
from keras_smallvit.layers.patching import ShiftedPatchTokenization
from keras_smallvit.layers.transformer_block import CONTEXT_BROADCASTING_POSITIONS
from keras_smallvit.layers.transformer_block import context_broadcasting_config
from keras_smallvit.models.attention_maps import class_token_attention
from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_divisible
from keras_smallvit.utils.validation import check_range

TOKENIZERS = ("patch", "spt")
# The `keras.Model` keyword arguments a functional model of this package
# forwards (what its `get_config()` holds besides its own arguments).
KERAS_MODEL_ARGUMENTS = ("name", "trainable")


def check_model_kwargs(model_class, kwargs):
    """Raises a `ValueError` for a keyword argument `model_class` does not
    take: a functional `keras.Model` drops unknown ones silently, so a
    misspelt `depthh=2` would build the default model.

    Args:
        model_class: the class being constructed (its signature lists the
            allowed arguments).
        kwargs: the `**kwargs` its `__init__` received.
    """
    unknown = [k for k in kwargs if k not in KERAS_MODEL_ARGUMENTS]
    if unknown:
        from keras_smallvit.models.registry import constructor_arguments

        allowed = sorted({*constructor_arguments(model_class), *KERAS_MODEL_ARGUMENTS})
        raise ValueError(
            f"Invalid argument `{unknown[0]}` for {model_class.__name__}. Allowed: {', '.join(allowed)}."
        )


def check_image_and_patch_size(image_size, patch_size):
    """`(image_hw, patch_hw)` pairs; the patch must divide the image."""
    image_hw = as_pair("image_size", image_size)
    patch_hw = as_pair("patch_size", patch_size)
    for axis, size, patch in zip(("height", "width"), image_hw, patch_hw):
        check_divisible(f"image_size ({axis})", size, f"patch_size ({axis})", patch)
    return image_hw, patch_hw


def check_technique_arguments(
    *,
    attention,
    attention_types,
    suppression,
    context_broadcasting,
    context_broadcasting_position,
    shift_directions,
    embedding_dropout,
):
    """Checks the arguments every backbone takes; returns the normalised
    `(suppression, context_broadcasting)` configs (dicts or None)."""
    check_choice("attention", attention, tuple(attention_types))
    check_choice("context_broadcasting_position", context_broadcasting_position, CONTEXT_BROADCASTING_POSITIONS)
    check_choice("shift_directions", shift_directions, tuple(SHIFT_DIRECTIONS))
    check_range("embedding_dropout", embedding_dropout, 0.0, 1.0, high_inclusive=False)
    return suppression_config(suppression), context_broadcasting_config(context_broadcasting)


def make_tokenizer(tokenizer, patch_size, hidden_dim, *, shift_directions, shift_ratio, layer_norm_epsilon, dtype):
    """The image tokenizer named `"tokenizer"`: `PatchEmbedding` for
    `"patch"`, `ShiftedPatchTokenization` (SPT) for `"spt"`."""
    check_choice("tokenizer", tokenizer, TOKENIZERS)
    if tokenizer == "spt":
        return ShiftedPatchTokenization(
            patch_size,
            hidden_dim,
            shift_directions=shift_directions,
            shift_ratio=shift_ratio,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="tokenizer",
        )
    return PatchEmbedding(patch_size, hidden_dim, dtype=dtype, name="tokenizer")


def keep_dtype_policy(model, dtype):
    """Sets a functional model's own `dtype_policy` to `dtype` (when given).

    `keras.Model(inputs, outputs, dtype=...)` drops `dtype`: the model's
    policy stays float32 while its layers are mixed, so a config written from
    `model.dtype_policy` would reload a mixed-precision model as float32.
    """
    if dtype is not None:
        model.dtype_policy = dtype


class Backbone(keras.Model):
    """Base of the package's functional backbones.

    A subclass builds its graph in `__init__`, calls `super().__init__(inputs,
    outputs, ...)`, then `self.set_config(**arguments)` with its constructor
    arguments (validated and normalised): they become attributes and
    `get_config()`, so `from_config(get_config())` rebuilds the same model.

    Override point: `class_token_attention(attention_maps)`.
    """

    def __init__(self, *args, dtype=None, **kwargs):
        check_model_kwargs(type(self), {k: v for k, v in kwargs.items() if k not in ("inputs", "outputs")})
        super().__init__(*args, dtype=dtype, **kwargs)
        keep_dtype_policy(self, dtype)

    def set_config(self, **arguments):
        """Stores the constructor `arguments` as attributes and as the config."""
        self._config_arguments = tuple(arguments)
        for name, value in arguments.items():
            setattr(self, name, value)

    def class_token_attention(self, attention_maps):
        """Class-token rows of `attention_maps` on the patch grid: a list of
        `(B, num_heads, grid_h, grid_w)`. Backbones without class-token maps
        return None."""
        return class_token_attention(attention_maps, self.grid_size, self.num_prefix_tokens)

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }
        config.update({name: getattr(self, name) for name in self._config_arguments})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
