"""`TechniqueSpec`: the one vocabulary of the small-dataset techniques.

Every backbone, block and registry entry takes the techniques as one
`TechniqueSpec` and passes it down unchanged; only three places read it:

- the tokenizer hook (`make_tokenizer`, `make_spt`, `make_spt_pooling`): SPT;
- the attention hook (`attention_options`): LSA's diagonal mask and learned
  temperature (together or alone), the softmax temperature multiple, SATA's
  suppression, as `MultiHeadSelfAttention` arguments;
- the block factory (`block_layers`): layers a technique inserts into every
  transformer block at a position (CB, or a technique you register with
  `register_block_technique`).

The spec's fields are the keyword options the backbones took before it
(files with those load through `keras_smallvit.utils.legacy`):

| technique | `techniques=` name | spec fields |
|---|---|---|
| SPT | `"spt"` | `tokenizer="spt"`, `shift_directions`, `shift_ratio` |
| LSA | `"lsa"` | `attention="lsa"` (diagonal mask + learned temperature) |
| LSA's mask only (M-ViT) | `"diagonal_mask"` | `attention="diagonal_mask"` |
| LSA's temperature only (T-ViT) | `"learnable_temperature"` | `attention="learnable_temperature"` |
| softmax temperature x k (SATA paper Table 6) | (none) | `temperature_multiple=k` |
| SATA | `"sata"` | `suppression` (dict of `TrivialAttentionSuppression` args) |
| CB | `"cb"` | `context_broadcasting` (dict of `ContextBroadcasting` args), `context_broadcasting_position` |

`"diagonal_mask"` and `"learnable_temperature"` together are `"lsa"`.
SATA with a fixed `s` (SATA paper Tables 3-5) is
`suppression={"threshold": t, "initial_scale": s, "trainable_scale": False}`
(`s = 0` included). SPT as the pooling between stages (`S_pool`) is the
PiT / Swin backbone argument `downsampling` (`"spt"`, the default with SPT;
`"conv"` / `"patch_merging"`: SPT at the input only).

SATA's own learning rate is not here: it belongs to the optimizer
(`keras_smallvit.optimizers.MultiRateAdamW`).
"""

import dataclasses
from typing import Callable

import keras

from keras_smallvit.layers.context_broadcasting import ContextBroadcasting
from keras_smallvit.layers.patching import SHIFT_DIRECTIONS
from keras_smallvit.layers.patching import PatchEmbedding
from keras_smallvit.layers.patching import ShiftedPatchTokenization
from keras_smallvit.layers.suppression import TrivialAttentionSuppression
from keras_smallvit.utils import legacy
from keras_smallvit.utils.technique_names import LSA_ELEMENTS
from keras_smallvit.utils.technique_names import PAPER_TECHNIQUES
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_range

# None: the backbone's plain tokenizer ("patch", or T2T's "soft_split").
TOKENIZERS = ("patch", "soft_split", "spt")
# "lsa" is both of LSA's elements; "diagonal_mask" / "learnable_temperature"
# one of them alone (SPT/LSA paper Table 4: M-ViT / T-ViT).
ATTENTION_TYPES = ("standard", "lsa", "diagonal_mask", "learnable_temperature")
# The attention types that are also `techniques=` names, besides "lsa"
# (`LSA_ELEMENTS`, imported above from the one vocabulary).
BLOCK_POSITIONS = ("mlp_output", "attention_output", "block_output")
SUPPRESSION_KEYS = ("threshold", "initial_scale", "trainable_scale", "epsilon")
# What `techniques=("sata",)` / `("cb",)` switch on: the papers' settings.
SATA_DEFAULTS = {"threshold": 0.1, "initial_scale": 0.5}


@dataclasses.dataclass(frozen=True)
class BlockTechnique:
    """A technique that inserts one layer into every transformer block.

    Attributes:
        name: its name in `techniques=(...)` (e.g. `"cb"`).
        option: its spec field and keyword option (e.g.
            `"context_broadcasting"`); `f"{option}_position"` is the field
            of its position, and `f"{option}_layer"` the block attribute
            holding the layer (its weights' path in saved files).
        layer: `layer(**options, dtype=..., name=option)` makes the layer;
            it maps `(B, N, dim)` to the same shape.
        keys: the option keys the layer takes.
        defaults: the options `techniques=(name,)` switches on.
        position: the default position, one of `BLOCK_POSITIONS`.
        mixes_tokens: whether it mixes tokens (then it is left out of blocks
            that update a single token, CaiT's class attention).
    """

    name: str
    option: str
    layer: Callable
    keys: tuple
    defaults: dict = dataclasses.field(default_factory=dict)
    position: str = "mlp_output"
    mixes_tokens: bool = False

    @property
    def position_option(self):
        return f"{self.option}_position"


BLOCK_TECHNIQUES = {}


def register_block_technique(technique):
    """Adds a `BlockTechnique`: afterwards `techniques=(technique.name,)`, the
    spec field `technique.option` and its position work in every backbone.
    Returns the technique."""
    taken = {t.name for t in BLOCK_TECHNIQUES.values()} | {*PAPER_TECHNIQUES, *LSA_ELEMENTS}
    if technique.option in BLOCK_TECHNIQUES or technique.name in taken:
        raise ValueError(f"A technique named {technique.name!r} / {technique.option!r} is already registered.")
    check_choice("position", technique.position, BLOCK_POSITIONS)
    BLOCK_TECHNIQUES[technique.option] = technique
    return technique


def unregister_block_technique(option):
    """Removes the block technique whose spec field is `option`."""
    BLOCK_TECHNIQUES.pop(option, None)


# CB: no parameters (learned per-channel scale with `learnable_scale`).
register_block_technique(
    BlockTechnique(
        "cb", "context_broadcasting", ContextBroadcasting, ("ratio", "learnable_scale"), {"ratio": 0.5}, mixes_tokens=True
    )
)


def technique_names():
    """Names `techniques=(...)` accepts: the papers' SPT, LSA and SATA first,
    then the registered block techniques (CB first), then LSA's two elements
    alone. With no other block technique registered, the built-in
    vocabulary `keras_smallvit.utils.technique_names.TECHNIQUES`; the checks
    before Keras read it through `known_techniques()`."""
    return (*PAPER_TECHNIQUES, *(t.name for t in BLOCK_TECHNIQUES.values()), *LSA_ELEMENTS)


def _options(name, value, keys, layer):
    """`None` or a dict of `layer` arguments from `None`/`False`, `True`
    (the layer's defaults), a dict, or an instance of `layer`."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(layer, type) and isinstance(value, layer):
        config = value.get_config()
        return {k: config[k] for k in keys if k in config}
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise ValueError(f"Invalid `{name}` keys {unknown}. Allowed keys: {', '.join(keys)}.")
        layer(**value)  # validates the values now
        return dict(value)
    raise ValueError(
        f"Invalid `{name}`: {value!r}. Allowed values: None, True, a dict of "
        f"{getattr(layer, '__name__', 'layer')} arguments ({', '.join(keys)})."
    )


def suppression_config(suppression):
    """Normalises a `suppression` (SATA) argument to `None` or a kwargs dict
    of `TrivialAttentionSuppression`: `None`, `True` (the layer's defaults),
    a dict, or a `TrivialAttentionSuppression` instance."""
    return _options("suppression", suppression, SUPPRESSION_KEYS, TrivialAttentionSuppression)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class TechniqueSpec:
    """Which techniques a model uses, with their settings (see the module docstring).

    Args:
        tokenizer: `"spt"` (SPT), or the backbone's plain tokenizer:
            None, `"patch"` or (T2T) `"soft_split"`.
        attention: `"standard"`, `"lsa"` (LSA: diagonal mask + learned
            per-head temperature, in every attention layer), or one of
            LSA's elements alone: `"diagonal_mask"` (the softmax scale
            stays fixed) or `"learnable_temperature"` (no mask).
        suppression: SATA settings: None (off), True (the layer's
            defaults) or a dict of `TrivialAttentionSuppression` arguments.
        shift_directions: SPT's directions, `"diagonal"`, `"cardinal"` or
            `"all"` (also the SPT pooling of PiT and Swin).
        shift_ratio: SPT's shift as a fraction of the patch size, in `(0, 1]`.
        temperature_multiple: `k > 0`: every attention's softmax scale is
            `k` times its default (`k / sqrt(head_dim)`; T2T's token
            transformers `k / sqrt(C / heads)`), the SATA paper's
            `tau = tau' / sqrt(D_h)` (Table 6). With a learned temperature
            (`"lsa"`, `"learnable_temperature"`) it is the initial value.
        **block_options: per registered `BlockTechnique`: its `option`
            (None, True or a dict of its layer's arguments) and
            `f"{option}_position"` (one of `BLOCK_POSITIONS`); CB:
            `context_broadcasting` and `context_broadcasting_position`.
    """

    def __init__(
        self,
        tokenizer=None,
        attention="standard",
        suppression=None,
        shift_directions="diagonal",
        shift_ratio=0.5,
        temperature_multiple=1.0,
        **block_options,
    ):
        if tokenizer is not None:
            check_choice("tokenizer", tokenizer, TOKENIZERS)
        self.tokenizer = tokenizer
        self.attention = check_choice("attention", attention, ATTENTION_TYPES)
        self.suppression = suppression_config(suppression)
        self.shift_directions = check_choice("shift_directions", shift_directions, tuple(SHIFT_DIRECTIONS))
        self.shift_ratio = check_range("shift_ratio", shift_ratio, 0.0, 1.0, low_inclusive=False)
        self.temperature_multiple = check_range(
            "temperature_multiple", temperature_multiple, 0.0, None, low_inclusive=False
        )
        allowed = [f for t in BLOCK_TECHNIQUES.values() for f in (t.option, t.position_option)]
        unknown = [k for k in block_options if k not in allowed]
        if unknown:
            raise ValueError(f"Invalid technique option `{unknown[0]}`. Allowed: {', '.join(self.field_names())}.")
        self.block_options = {}
        for option, technique in BLOCK_TECHNIQUES.items():
            options = _options(option, block_options.get(option), technique.keys, technique.layer)
            position = block_options.get(technique.position_option, technique.position)
            check_choice(technique.position_option, position, BLOCK_POSITIONS)
            self.block_options[option] = (options, position)

    # === The fields of the block techniques (CB: `context_broadcasting`) ===

    def __getattr__(self, name):
        # Only reached for names that are not plain attributes.
        block_options = self.__dict__.get("block_options", {})
        for option, (options, position) in block_options.items():
            if name == option:
                return options
            if name == f"{option}_position":
                return position
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    @classmethod
    def from_names(cls, names=(), **overrides):
        """The spec of a `techniques=` collection: each name switches its
        technique on with the papers' settings; `overrides` (spec fields)
        replace them, a dict given for SATA's or a block technique's options
        being merged into those settings.

        Args:
            names: any subset of `technique_names()` (a string for one).
            **overrides: spec fields (e.g. `suppression={"threshold": 0.05}`).
        """
        if isinstance(names, str):
            names = (names,) if names else ()
        for name in names:
            check_choice("techniques", name, technique_names())
        fields = {}
        if "spt" in names:
            fields["tokenizer"] = "spt"
        elements = [name for name in LSA_ELEMENTS if name in names]
        if "lsa" in names or len(elements) == len(LSA_ELEMENTS):
            fields["attention"] = "lsa"
        elif elements:
            fields["attention"] = elements[0]
        switched = [("sata", "suppression", SATA_DEFAULTS)]
        switched += [(t.name, t.option, t.defaults) for t in BLOCK_TECHNIQUES.values()]
        for name, option, defaults in switched:
            if name in names:
                given = overrides.pop(option, None)
                fields[option] = {**defaults, **given} if isinstance(given, dict) else dict(defaults)
        return cls(**{**fields, **overrides})

    @classmethod
    def resolve(cls, techniques=None, **fields):
        """The spec of a backbone's or block's `techniques` argument.

        Args:
            techniques: None (none on), a `TechniqueSpec`, its config dict,
                or a collection of names (`("spt", "lsa")`, see `from_names`).
            **fields: spec fields applied on top (`create_model`'s overrides,
                e.g. `suppression={"threshold": 0.05}`; with names, merged as
                in `from_names`).
        """
        if techniques is None:
            spec = cls()
        elif isinstance(techniques, cls):
            spec = techniques
        elif isinstance(techniques, dict):
            spec = cls.from_config(techniques)
        elif isinstance(techniques, (list, tuple, str)):
            return cls.from_names(techniques, **fields)
        else:
            raise ValueError(
                f"Invalid `techniques`: {techniques!r}. Allowed values: None, a TechniqueSpec, its config "
                f"dict, or names among {', '.join(technique_names())}."
            )
        return spec.replace(**fields) if fields else spec

    @classmethod
    def field_names(cls):
        names = ["tokenizer", "attention", "temperature_multiple", "suppression", "shift_directions", "shift_ratio"]
        for technique in BLOCK_TECHNIQUES.values():
            names += [technique.option, technique.position_option]
        return tuple(names)

    def replace(self, **fields):
        """A copy with `fields` replaced (validated again)."""
        return type(self).from_config({**self.get_config(), **fields})

    def check_tokenizer(self, plain):
        """The spec with `tokenizer` resolved for a backbone whose plain
        tokenizer is `plain`: None becomes `plain`; anything but `plain` and
        `"spt"` raises a `ValueError` naming `tokenizer`."""
        if self.tokenizer is None:
            return self.replace(tokenizer=plain)
        check_choice("tokenizer", self.tokenizer, (plain, "spt"))
        return self

    @property
    def spt(self):
        """Whether SPT tokenizes the images."""
        return self.tokenizer == "spt"

    @property
    def names(self):
        """The names of the techniques that are on (`techniques=` vocabulary)."""
        on = {"spt": self.spt, "sata": self.suppression is not None}
        on.update({name: self.attention == name for name in ("lsa", *LSA_ELEMENTS)})
        on.update({t.name: self.block_options[t.option][0] is not None for t in BLOCK_TECHNIQUES.values()})
        return tuple(name for name in technique_names() if on[name])

    # === Hooks: what the layers ask the spec ===

    def make_tokenizer(self, patch_size, hidden_dim, *, layer_norm_epsilon=1e-5, dtype=None, name="tokenizer"):
        """The image tokenizer: `ShiftedPatchTokenization` with SPT, else `PatchEmbedding`."""
        if self.spt:
            return self.make_spt(patch_size, hidden_dim, layer_norm_epsilon=layer_norm_epsilon, dtype=dtype, name=name)
        return PatchEmbedding(patch_size, hidden_dim, dtype=dtype, name=name)

    def make_spt(self, patch_size, hidden_dim, *, shift_ratio=None, num_prefix_tokens=0, layer_norm_epsilon=1e-5, dtype=None, name):
        """A `ShiftedPatchTokenization` with this spec's directions (and
        shift ratio unless given: the pooling layers use the default 0.5)."""
        return ShiftedPatchTokenization(
            patch_size,
            hidden_dim,
            shift_directions=self.shift_directions,
            shift_ratio=self.shift_ratio if shift_ratio is None else shift_ratio,
            num_prefix_tokens=num_prefix_tokens,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name=name,
        )

    def make_spt_pooling(self, hidden_dim, *, num_prefix_tokens=0, layer_norm_epsilon=1e-5, dtype=None, name):
        """SPT as a pooling layer (PiT's and Swin's `S_pool`): 2x2 merging of
        a token grid, shifted by 1 cell in this spec's directions."""
        return self.make_spt(
            2,
            hidden_dim,
            shift_ratio=0.5,
            num_prefix_tokens=num_prefix_tokens,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name=name,
        )

    def attention_options(self, self_attention=True):
        """`MultiHeadSelfAttention` arguments: LSA's `diagonal_mask` (self-
        attention only: a class token attending to patches has no diagonal)
        and `learnable_temperature` (`"lsa"`, or each alone), the
        `temperature_multiple`, SATA's `suppression`."""
        mask = self.attention in ("lsa", "diagonal_mask")
        temperature = self.attention in ("lsa", "learnable_temperature")
        return {
            "diagonal_mask": mask and self_attention,
            "learnable_temperature": temperature,
            "temperature_multiple": self.temperature_multiple,
            "suppression": self.suppression,
        }

    def block_layers(self, dtype=None, single_token=False):
        """The block factory's technique layers, not yet built: a list of
        `(attribute, position, layer)`, one per block technique that is on.

        Args:
            dtype: the block's dtype policy.
            single_token: the block updates one token (leaves out the
                techniques that mix tokens).
        """
        layers = []
        for option, (options, position) in self.block_options.items():
            technique = BLOCK_TECHNIQUES[option]
            if options is None or (single_token and technique.mixes_tokens):
                continue
            layers.append((f"{option}_layer", position, technique.layer(**options, dtype=dtype, name=option)))
        return layers

    # === Serialization ===

    def get_config(self):
        config = {
            "tokenizer": self.tokenizer,
            "attention": self.attention,
            "temperature_multiple": self.temperature_multiple,
            "suppression": self.suppression,
        }
        for option, (options, position) in self.block_options.items():
            if options is not None:  # a block technique only when it is on
                config[option] = options
                config[BLOCK_TECHNIQUES[option].position_option] = position
        config.update(shift_directions=self.shift_directions, shift_ratio=self.shift_ratio)
        return config

    @classmethod
    def from_config(cls, config):
        # Old files' SATA options (`scale_lr_multiplier`): see keras_smallvit.utils.legacy.
        return cls(**legacy.upgrade_config(config, "spec")[0])

    def __eq__(self, other):
        return isinstance(other, TechniqueSpec) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(sorted(self.get_config().items(), key=str)))

    def __repr__(self):
        return f"TechniqueSpec({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

