"""A registry of named model variants (timm style): `create_model`, `list_models`.

The variants are data: one table of `Preset`s (`keras_smallvit/models/presets.py`)
and one generic builder, `build_preset`.
"""

import dataclasses
import inspect
import math
from typing import Callable
from typing import Optional

from keras_smallvit.layers.techniques import TechniqueSpec
from keras_smallvit.layers.techniques import technique_names
from keras_smallvit.models import preset_table
from keras_smallvit.models.preset_table import HEAD_ARGUMENTS
from keras_smallvit.models.preset_table import TECHNIQUES  # noqa: F401 (`keras_smallvit.models.TECHNIQUES`)
from keras_smallvit.models.preset_table import ModelFacts
from keras_smallvit.models.preset_table import preset_arguments
from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_choice


@dataclasses.dataclass(frozen=True)
class Preset:
    """One row of the presets table: everything a named variant is.

    Attributes:
        model_class: a `Backbone` subclass (wrapped in an `ImageClassifier`),
            or, with `classifier=True`, a whole classifier class taking
            `num_classes` and `image_size` (the CNNs).
        config: its architecture arguments (the papers' small-dataset config).
        techniques: the techniques it switches on (`TechniqueSpec.from_names`).
        description: one line for `list_models(details=True)`.
        paper_lr: the papers' base learning rate for this family (recipe hint).
        stochastic_depth: whether it takes `drop_path_rate` (the recipe's
            stochastic depth; False for CNNs).
        head: `ImageClassifier` defaults (Swin: average pooling after the norm).
        image_defaults: `image_size -> {argument: value}` for the arguments
            that depend on the image (the patch size of an 8x8 or 16x16 grid),
            used when the caller does not give them (or gives None).
        classifier: `model_class` is a whole classifier (no head, no
            techniques; a local `weights` file may be given).
    """

    model_class: type
    config: dict
    techniques: tuple = ()
    description: str = ""
    paper_lr: float = 1e-3
    stochastic_depth: bool = True
    head: dict = dataclasses.field(default_factory=dict)
    image_defaults: Optional[Callable] = None
    classifier: bool = False

    def arguments(self):
        """The `create_model` overrides this preset takes (sorted names)."""
        exclude = ("num_classes", "image_size") if self.classifier else ("image_size",)
        class_arguments = constructor_arguments(self.model_class, exclude=exclude)
        return preset_arguments(class_arguments, self.classifier, TechniqueSpec.field_names())


def build_preset(preset, num_classes, image_size, techniques, name=None, **overrides):
    """The one builder of every preset: the architecture config, then the
    image-dependent defaults, then the caller's overrides; the techniques as
    one `TechniqueSpec` (`techniques` names with the overrides that are spec
    fields, e.g. `suppression={"threshold": 0.05}`); head options to the
    `ImageClassifier`.

    Args:
        preset: a `Preset`.
        num_classes: number of classes.
        image_size: input size.
        techniques: technique names (see `TechniqueSpec.from_names`) or a
            `TechniqueSpec`.
        name: the registry name (for error messages).
        **overrides: architecture, technique and head arguments.
    """
    if preset.classifier:
        # Imported here: only the CNN rows need the weight-file checks.
        from keras_smallvit.models.cnn.cnn_common import check_no_techniques
        from keras_smallvit.models.cnn.cnn_common import check_weights_path
        from keras_smallvit.models.cnn.cnn_common import load_weights_file

        names = techniques.names if isinstance(techniques, TechniqueSpec) else techniques
        check_no_techniques(name or preset.model_class.__name__, names)
        weights = overrides.pop("weights", None)
        check_weights_path(weights)  # a bad `weights` fails before the model is built
        model = preset.model_class(**{**preset.config, **overrides, "num_classes": num_classes, "image_size": image_size})
        return load_weights_file(model, weights)
    from keras_smallvit.models.image_classifier import ImageClassifier

    head = {**preset.head, **{k: overrides.pop(k) for k in HEAD_ARGUMENTS if k in overrides}}
    spec_fields = {k: overrides.pop(k) for k in TechniqueSpec.field_names() if k in overrides}
    spec = TechniqueSpec.resolve(techniques, spec_fields)
    arguments = {**preset.config, **overrides}
    defaulted = {}
    for argument, value in (preset.image_defaults(image_size) if preset.image_defaults else {}).items():
        if arguments.get(argument) is None:
            arguments[argument] = defaulted[argument] = value
    if spec.tokenizer == "spt" and "patch_size" in defaulted:
        check_default_spt_patch(name or preset.model_class.__name__, image_size, defaulted["patch_size"], spec.shift_ratio)
    backbone = preset.model_class(image_size=image_size, techniques=spec, **arguments)
    return ImageClassifier(backbone, num_classes, dtype=overrides.get("dtype"), **head)


def check_default_spt_patch(name, image_size, patch_size, shift_ratio):
    """Raises a `ValueError` naming `image_size` when the patch size derived
    from it (the caller gave none) is too small for SPT's shift
    `int(patch_size * shift_ratio)` to be at least one pixel (an error
    otherwise about `shift_ratio` and a patch size the user never gave)."""
    patch = min(patch_size)
    if int(patch * shift_ratio) >= 1:
        return
    grid = tuple(size // p for size, p in zip(as_pair("image_size", image_size), patch_size))
    smallest_patch = math.ceil(1 / shift_ratio)
    if int(smallest_patch * shift_ratio) < 1:  # float rounding
        smallest_patch += 1
    raise ValueError(
        f"Invalid `image_size` {image_size} for model {name!r} with shifted patch tokenization: its default "
        f"patch size {tuple(patch_size)} (a {grid[0]}x{grid[1]} token grid) makes SPT's shift "
        f"int({patch} * shift_ratio {shift_ratio}) 0 pixels. Allowed: image_size a multiple of {max(grid)} "
        f"of at least {max(grid) * smallest_patch}, or give `patch_size` (at least {smallest_patch})."
    )


def register_preset(name, preset):
    """Registers the variant `name` of the presets table."""

    def build(num_classes, image_size, techniques, **overrides):
        return build_preset(preset, num_classes, image_size, techniques, name=name, **overrides)

    build.__name__ = f"build_{name}"
    register_model(
        name,
        build,
        preset.techniques,
        preset.description,
        paper_lr=preset.paper_lr,
        stochastic_depth=preset.stochastic_depth,
        arguments=preset.arguments(),
        preset=preset,
    )


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
        preset: the `Preset` it was registered from (None for a custom `build`).
    """

    name: str
    build: Callable
    techniques: tuple
    description: str
    paper_lr: float = 1e-3
    stochastic_depth: bool = True
    arguments: Optional[tuple] = None
    preset: Optional[Preset] = None


_REGISTRY = {}
# Given by `create_model` itself, never as an override.
_BUILD_ARGUMENTS = ("num_classes", "image_size", "techniques")


def constructor_arguments(*constructors, exclude=()):
    """Sorted names of the keyword arguments of `constructors` (classes or
    functions, read with `inspect.signature`), without `*args`/`**kwargs`
    and the names in `exclude`.

    Args:
        *constructors: callables whose named parameters are allowed.
        exclude: names the builder sets itself (e.g. `"image_size"`).
    """
    names = set()
    for constructor in constructors:
        for parameter in inspect.signature(constructor).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.name not in exclude and parameter.name != "self":
                names.add(parameter.name)
    return tuple(sorted(names))


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
