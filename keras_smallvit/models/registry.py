"""A registry of named model variants (timm style): `create_model`, `list_models`."""

import dataclasses
import inspect
from typing import Callable
from typing import Optional

from keras_smallvit.utils.validation import check_choice

TECHNIQUES = ("spt", "lsa", "sata", "cb")


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
    """

    name: str
    build: Callable
    techniques: tuple
    description: str
    paper_lr: float = 1e-3
    stochastic_depth: bool = True
    arguments: Optional[tuple] = None


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


def register_model(name, build, techniques=(), description="", paper_lr=1e-3, stochastic_depth=True, arguments=None):
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
    _REGISTRY[name] = ModelEntry(name, build, tuple(techniques), description, paper_lr, stochastic_depth, arguments)


def list_models(details=False):
    """Sorted registered names, or `{name: ModelEntry}` with `details=True`."""
    if details:
        return {name: _REGISTRY[name] for name in sorted(_REGISTRY)}
    return sorted(_REGISTRY)


def get_model_entry(name):
    check_choice("name", name, list_models())
    return _REGISTRY[name]


def check_model_arguments(name, overrides):
    """Raises a `ValueError` naming the first override that model `name`
    does not take (checked without building the model).

    Args:
        name: a registered model name.
        overrides: the `create_model` keyword arguments (a mapping or names).
    """
    entry = get_model_entry(name)
    if entry.arguments is None:
        return
    for argument in overrides:
        if argument not in entry.arguments:
            raise ValueError(
                f"Invalid argument `{argument}` for model {name!r}. "
                f"Allowed: {', '.join(entry.arguments)}."
            )


def normalize_techniques(techniques):
    """Validates a techniques collection and returns it as a sorted-by-canon tuple."""
    if isinstance(techniques, str):
        techniques = (techniques,) if techniques else ()
    techniques = tuple(techniques)
    for t in techniques:
        check_choice("techniques", t, TECHNIQUES)
    return tuple(t for t in TECHNIQUES if t in techniques)


def create_model(name, *, num_classes, image_size, techniques=None, **overrides):
    """Builds a registered image classifier.

    Args:
        name: a name from `list_models()` (e.g. `"vit"`, `"sl_vit"`).
        num_classes: number of classes.
        image_size: input size in pixels (int or `(height, width)`).
        techniques: if given, replaces the variant's techniques: any subset of
            `("spt", "lsa", "sata", "cb")`, e.g. `create_model("vit",
            techniques=("spt", "lsa", "sata", "cb"), ...)`.
        **overrides: backbone or classifier arguments that replace the
            defaults (e.g. `depth=6`, `suppression={"threshold": 0.05}`,
            `drop_path_rate=0.1`, `dtype="mixed_bfloat16"`).
    """
    entry = get_model_entry(name)
    # Before the build: a misspelt argument would otherwise be dropped silently.
    check_model_arguments(name, overrides)
    techniques = entry.techniques if techniques is None else normalize_techniques(techniques)
    return entry.build(num_classes=num_classes, image_size=image_size, techniques=techniques, **overrides)
