"""What the transformer backbones share: argument checks, the technique
spec, config plumbing and the class-token map override point."""

import keras

from keras_smallvit.layers.techniques import TechniqueSpec
from keras_smallvit.models.attention_maps import class_token_attention
from keras_smallvit.utils import legacy
from keras_smallvit.utils.layers import keep_dtype_policy
from keras_smallvit.utils.model_arguments import check_model_kwargs
from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_divisible
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range


def check_image_and_patch_size(image_size, patch_size):
    """`(image_hw, patch_hw)` pairs; the patch must divide the image."""
    image_hw = as_pair("image_size", image_size)
    patch_hw = as_pair("patch_size", patch_size)
    for axis, size, patch in zip(("height", "width"), image_hw, patch_hw):
        check_divisible(f"image_size ({axis})", size, f"patch_size ({axis})", patch)
    return image_hw, patch_hw


def resolve_techniques(techniques, kwargs, plain_tokenizer="patch", owner=None):
    """A backbone's `TechniqueSpec` from its `techniques` argument, the
    tokenizer resolved to `plain_tokenizer` or `"spt"` (a `ValueError`
    naming `tokenizer` otherwise). An old flat technique option among
    `kwargs` (`attention="lsa"`, ...) is a `ValueError` naming `techniques`
    (old saved configs load through `keras_smallvit.utils.legacy`).

    Args:
        techniques: see `TechniqueSpec.resolve`.
        kwargs: the backbone's `**kwargs` (checked, not changed).
        plain_tokenizer: the backbone's tokenizer without SPT.
        owner: the backbone class, for the message (default: "the backbone").
    """
    legacy.check_no_old_arguments(owner or Backbone, kwargs)
    return TechniqueSpec.resolve(techniques).check_tokenizer(plain_tokenizer)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class WithAttentionMaps(keras.layers.Wrapper):
    """Calls its block with `return_attention_scores="all"`: `(x, maps)`.

    `Backbone.attention_model` calls each block through one, sharing the
    block and its weights: a functional model checks that its outputs are
    connected by the output structure of each layer's first call, and a
    block's first call (the backbone's graph) returns no maps.

    Args:
        layer: the block (a `TransformerBlock` or any block taking
            `return_attention_scores`).
    """

    def call(self, inputs, **kwargs):
        return self.layer(inputs, return_attention_scores="all", **kwargs)

    def compute_output_spec(self, inputs, **kwargs):
        return self.layer.compute_output_spec(inputs, return_attention_scores="all", **kwargs)


def call_block(block, x, attention_maps=None, **kwargs):
    """`block(x, **kwargs)` in a backbone's graph function.

    With `attention_maps` None (the backbone's own graph) the block returns
    no maps, so its attention may take the fused form; with a list
    (`Backbone.attention_model`) the block is called through a
    `WithAttentionMaps` (`return_attention_scores="all"`) and its dict of
    maps is appended.
    """
    if attention_maps is None:
        return block(x, **kwargs)
    wrapper = WithAttentionMaps(block, dtype=block.dtype_policy, name=f"{block.name}_with_maps")
    x, maps = wrapper(x, **kwargs)
    attention_maps.append(maps)
    return x


def make_embedding_dropout(rate, dtype):
    """The `Dropout` after the embedding, named `"embedding_dropout"`
    (`rate` validated under that name)."""
    check_range("embedding_dropout", rate, 0.0, 1.0, high_inclusive=False)
    return keras.layers.Dropout(rate, dtype=dtype, name="embedding_dropout")


def default_patch_size(image_size, tokens_per_side):
    """Patch size that gives a `tokens_per_side` square token grid (8x8 for
    ViT and CaiT, 16x16 for PiT and Swin), as in the papers' configs."""
    height, width = as_pair("image_size", image_size)
    for name, size in (("height", height), ("width", width)):
        if size % tokens_per_side:
            raise ValueError(
                f"Invalid `image_size` {image_size}: the default patch size makes a "
                f"{tokens_per_side}x{tokens_per_side} grid, so the image {name} must be a "
                f"multiple of {tokens_per_side} (e.g. 32 or 64); or pass `patch_size`."
            )
    return (height // tokens_per_side, width // tokens_per_side)


def stage_tuple(name, value, num_stages=None):
    """An int or a sequence of positive ints as a tuple (of `num_stages` items)."""
    if isinstance(value, (list, tuple)):
        values = tuple(check_positive_int(name, v) for v in value)
        if not values or (num_stages is not None and len(values) != num_stages):
            expected = "a non-empty sequence" if num_stages is None else f"one value per stage ({num_stages})"
            raise ValueError(f"Invalid `{name}`: {value!r}. Expected an int or {expected}.")
        return values
    if num_stages is None:
        raise ValueError(f"Invalid `{name}`: {value!r}. Expected a sequence of positive ints, one per stage.")
    return (check_positive_int(name, value),) * num_stages


@legacy.loads_old_configs("techniques")
class Backbone(keras.Model):
    """Base of the package's functional backbones.

    A subclass takes architecture arguments and one `techniques` (a
    `TechniqueSpec`, resolved by `resolve_techniques`), makes its layers in
    `__init__` handing the spec unchanged to its blocks and tokenizer, and
    defines its graph once, as a function `graph(images, attention_maps=None)`
    returning the sequence output, that calls every block through
    `call_block(block, x, attention_maps)`. It calls
    `super().__init__(images, graph)` (`images` its `keras.Input`), then
    `self.set_config(**arguments)` with its constructor arguments (validated
    and normalised): they become attributes and `get_config()` (the spec as
    its config dict), so `from_config(get_config())` rebuilds the same model;
    the configs of older versions pass through `keras_smallvit.utils.legacy`
    first. The spec's fields read from it: `backbone.techniques.suppression`.

    The backbone is `graph(images)`: its output is `{"sequence_output"}`,
    and no attention map is computed, so the attention may take its fused
    form (`predict` and `fit` of a classifier need no map).
    `attention_model(...)` is `graph(images, maps)` on the same layers: the
    sequence output and the maps from one forward pass.

    Override point: `class_token_attention(attention_maps)`.
    """

    def __init__(self, inputs, graph, dtype=None, **kwargs):
        check_model_kwargs(type(self), kwargs)
        super().__init__(inputs=inputs, outputs={"sequence_output": graph(inputs)}, dtype=dtype, **kwargs)
        keep_dtype_policy(self, dtype)
        self._graph = graph

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

    def attention_model(self, return_attention_scores=True):
        """A model sharing this backbone's layers and weights, from the same
        images to `{"sequence_output", "attention_maps"}` from one forward
        pass (the backbone's own outputs hold no maps).

        Args:
            return_attention_scores: True: `"attention_maps"` is a list with
                each attention layer's weights that multiply the values
                (float32, in graph order); `"all"`: each entry is the dict of
                its attention layer (`"before_suppression"`,
                `"after_suppression"`, `"weights"`; see
                `MultiHeadSelfAttention`). The blocks are called with
                `return_attention_scores="all"` (`call_block`; a documented
                call mode, nothing is patched), so the attention takes its
                explicit form.
        """
        check_choice("return_attention_scores", return_attention_scores, (True, "all"))
        images = keras.Input(shape=self.input_shape[1:], name="images")
        maps = []
        sequence_output = self._graph(images, maps)
        if return_attention_scores is True:
            maps = [layer_maps["weights"] for layer_maps in maps]
        suffix = "all_attention_maps" if return_attention_scores == "all" else "attention_maps"
        return keras.Model(images, {"sequence_output": sequence_output, "attention_maps": maps}, name=f"{self.name}_{suffix}")

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }
        for name in self._config_arguments:
            value = getattr(self, name)
            config[name] = value.get_config() if isinstance(value, TechniqueSpec) else value
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)

