"""What the transformer backbones share: argument checks, the technique
spec, config plumbing and the class-token map override point."""

import keras

from keras_smallvit.layers.attention import ATTENTION_MAPS
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


def call_block(block, x, attention_maps, **kwargs):
    """`block(x, **kwargs)` in a backbone's graph, appending its attention
    weights to `attention_maps`.

    The block is called with `return_attention_scores="all"`: its maps before
    and after SATA stay in the graph (unused by the backbone's outputs, so
    they cost nothing), where `Backbone.attention_model("all")` finds them.
    """
    x, maps = block(x, return_attention_scores="all", **kwargs)
    attention_maps.append(maps["weights"])
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
    `TechniqueSpec`, resolved by `resolve_techniques`), builds its graph in
    `__init__` handing the spec unchanged to its blocks and tokenizer, calls
    `super().__init__(inputs, outputs, ...)`, then
    `self.set_config(**arguments)` with its constructor arguments (validated
    and normalised): they become attributes and `get_config()` (the spec as
    its config dict), so `from_config(get_config())` rebuilds the same model;
    the configs of older versions pass through `keras_smallvit.utils.legacy`
    first. The spec's fields read from it: `backbone.techniques.suppression`.

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

    def attention_model(self, return_attention_scores=True):
        """A model sharing this backbone's weights, from the same images to
        its outputs, with the attention maps asked for.

        Args:
            return_attention_scores: True: this backbone itself (its
                `"attention_maps"` are the weights that multiply the values);
                `"all"`: each entry of `"attention_maps"` is the dict of its
                attention layer (`"before_suppression"`, `"after_suppression"`,
                `"weights"`; see `MultiHeadSelfAttention`), from one forward
                pass: the backbone calls every block with
                `return_attention_scores="all"` (`call_block`; a documented
                call mode, nothing is patched) and outputs the weights only.
        """
        if return_attention_scores is True:
            return self
        check_choice("return_attention_scores", return_attention_scores, (True, "all"))
        # Each block's dict of maps is in this graph already (`call_block`):
        # its call output, flattened with the dict's keys sorted.
        keys = sorted(ATTENTION_MAPS)
        by_weights = {}
        for layer in self.layers:
            outputs = layer.output if getattr(layer, "attention_layer", None) is not None else None
            if isinstance(outputs, (list, tuple)) and len(outputs) == 1 + len(keys):
                maps = dict(zip(keys, outputs[1:]))
                by_weights[id(maps["weights"])] = maps
        outputs = dict(self.output)
        outputs["attention_maps"] = [by_weights[id(weights)] for weights in outputs["attention_maps"]]
        return keras.Model(self.input, outputs, name=f"{self.name}_all_attention_maps")

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

