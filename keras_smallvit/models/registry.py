"""A registry of named model variants (timm style): `create_model`, `list_models`.

As in timm, the model modules import the registry, never the reverse: the
variants are registered by `keras_smallvit/models/presets.py` (one table of
`Preset`s and their one builder), which `keras_smallvit.register_all()`
imports, as does any use of `keras_smallvit.models` or
`keras_smallvit.create_model` (and Keras once imported with this package).
"""

import dataclasses
import inspect
from typing import Callable
from typing import Optional

from keras_smallvit.layers.techniques import TechniqueSpec
from keras_smallvit.layers.techniques import technique_names
from keras_smallvit.models import preset_table
from keras_smallvit.models.preset_table import TECHNIQUES  # noqa: F401 (`keras_smallvit.models.TECHNIQUES`)
from keras_smallvit.models.preset_table import ModelFacts
from keras_smallvit.utils.model_arguments import constructor_arguments
from keras_smallvit.utils.validation import check_choice


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered variant.

    Attributes:
        name: registry name.
        build: `build(num_classes, image_size, techniques, **overrides)` -> model.
        techniques: techniques the variant turns on by default.
        description: one line for `list_models(details=True)`.
        paper_lr: the papers' base learning rate for this family.
        stochastic_depth: whether `build` takes `drop_path_rate` (the
            training recipe's stochastic depth); False for CNNs.
        arguments: the keyword arguments `build` accepts besides
            `num_classes`, `image_size` and `techniques` (sorted names), or
            None when they cannot be known (a `build(**overrides)` registered
            without `arguments`): then only the model's constructors check.
        preset: the `presets.Preset` it was registered from (None for a custom `build`).
    """

    name: str
    build: Callable
    techniques: tuple
    description: str
    paper_lr: float = 1e-3
    stochastic_depth: bool = True
    arguments: Optional[tuple] = None
    preset: Optional[object] = None


_REGISTRY = {}
# Given by `create_model` itself, never as an override.
_BUILD_ARGUMENTS = ("num_classes", "image_size", "techniques")


def register_model(
    name, build, techniques=(), description="", paper_lr=1e-3, stochastic_depth=True, arguments=None, preset=None
):
    """Adds a variant; `build` receives `num_classes`, `image_size`,
    `techniques` and the user's overrides.

    Args:
        arguments: the override names `build` accepts (see
            `constructor_arguments`). None: read from `build`'s signature
            when it has no `**overrides`, else unchecked here.
    """
    if name in _REGISTRY:
        raise ValueError(f"A model named {name!r} is already registered.")
    if arguments is None:
        parameters = inspect.signature(build).parameters.values()
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            arguments = constructor_arguments(build, exclude=_BUILD_ARGUMENTS)
    arguments = None if arguments is None else tuple(sorted(set(arguments)))
    _REGISTRY[name] = ModelEntry(name, build, tuple(techniques), description, paper_lr, stochastic_depth, arguments, preset)


def list_models(details=False):
    """Sorted registered names, or `{name: ModelEntry}` with `details=True`."""
    if details:
        return {name: _REGISTRY[name] for name in sorted(_REGISTRY)}
    return sorted(_REGISTRY)


def get_model_entry(name):
    check_choice("name", name, list_models())
    return _REGISTRY[name]


def model_facts(name=None):
    """The `ModelFacts` of the registered model `name` (what a configuration
    check needs: `preset_table.check_model_settings`), or `{name: ModelFacts}`
    of every registered model."""
    if name is None:
        return {n: model_facts(n) for n in list_models()}
    entry = get_model_entry(name)
    arguments, classifier = entry.arguments, entry.preset is not None and entry.preset.classifier
    if arguments is not None and entry.preset is not None and not classifier:
        # With the fields of the block techniques registered since.
        arguments = tuple(sorted({*arguments, *TechniqueSpec.field_names()}))
    return ModelFacts(arguments, entry.techniques, classifier, entry.paper_lr)


def check_model_arguments(name, overrides):
    """Raises a `ValueError` naming the first override that model `name`
    does not take (checked without building the model).

    Args:
        name: a registered model name.
        overrides: the `create_model` keyword arguments (a mapping or names).
    """
    preset_table.check_model_arguments(name, model_facts(name), overrides)


def normalize_techniques(techniques):
    """Validates a techniques collection (names of `technique_names()`) and
    returns it as a sorted-by-canon tuple; a `TechniqueSpec` passes unchanged."""
    if isinstance(techniques, TechniqueSpec):
        return techniques
    names = technique_names()
    if isinstance(techniques, str):
        techniques = (techniques,) if techniques else ()
    if not isinstance(techniques, (list, tuple, set, frozenset)):
        raise ValueError(
            f"Invalid `techniques`: {techniques!r}. Allowed values: a `TechniqueSpec`, or a name or a "
            f"list/tuple of names from {', '.join(repr(n) for n in names)}."
        )
    techniques = tuple(techniques)
    for t in techniques:
        check_choice("techniques", t, names)
    return tuple(t for t in names if t in techniques)


def create_model(name, *, num_classes, image_size, techniques=None, **overrides):
    """Builds a registered image classifier.

    Args:
        name: a name from `list_models()` (e.g. `"vit"`, `"sl_vit"`).
        num_classes: number of classes.
        image_size: input size in pixels (int or `(height, width)`).
        techniques: if given, replaces the variant's techniques: any subset of
            `("spt", "lsa", "sata", "cb", "diagonal_mask",
            "learnable_temperature")` (plus registered block techniques),
            e.g. `create_model("vit", techniques=("spt", "lsa", "sata", "cb"),
            ...)`, or a `TechniqueSpec`.
        **overrides: backbone or classifier arguments that replace the
            defaults (e.g. `depth=6`, `suppression={"threshold": 0.05}`,
            `temperature_multiple=2.0`, `downsampling="conv"` (PiT),
            `drop_path_rate=0.1`, `dtype="mixed_bfloat16"`).
    """
    entry = get_model_entry(name)
    # Before the build: a misspelt argument would otherwise be dropped silently.
    check_model_arguments(name, overrides)
    techniques = entry.techniques if techniques is None else normalize_techniques(techniques)
    return entry.build(num_classes=num_classes, image_size=image_size, techniques=techniques, **overrides)
