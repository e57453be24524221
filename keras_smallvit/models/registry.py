"""A registry of named model variants (timm style): `create_model`, `list_models`."""

import dataclasses
from typing import Callable

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
    """

    name: str
    build: Callable
    techniques: tuple
    description: str
    paper_lr: float = 1e-3
    stochastic_depth: bool = True


_REGISTRY = {}


def register_model(name, build, techniques=(), description="", paper_lr=1e-3, stochastic_depth=True):
    """Adds a variant; `build` receives `num_classes`, `image_size`,
    `techniques` and the user's overrides."""
    if name in _REGISTRY:
        raise ValueError(f"A model named {name!r} is already registered.")
    _REGISTRY[name] = ModelEntry(name, build, tuple(techniques), description, paper_lr, stochastic_depth)


def list_models(details=False):
    """Sorted registered names, or `{name: ModelEntry}` with `details=True`."""
    if details:
        return {name: _REGISTRY[name] for name in sorted(_REGISTRY)}
    return sorted(_REGISTRY)


def get_model_entry(name):
    check_choice("name", name, list_models())
    return _REGISTRY[name]


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
    techniques = entry.techniques if techniques is None else normalize_techniques(techniques)
    return entry.build(num_classes=num_classes, image_size=image_size, techniques=techniques, **overrides)
