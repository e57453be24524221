"""Registered ViT variants: the small-dataset config of the papers' official code."""

from keras_smallvit.models.image_classifier import ImageClassifier
from keras_smallvit.models.registry import constructor_arguments
from keras_smallvit.models.registry import register_model
from keras_smallvit.models.vit.vit_backbone import ViTBackbone
from keras_smallvit.utils.validation import as_pair

# Official small-dataset ViT: 8x8 tokens (patch 4 at 32 px, 8 at 64 px).
VIT_SMALL_DATASET_CONFIG = dict(hidden_dim=192, depth=9, num_heads=12, head_dim=16, mlp_ratio=2.0)
NUM_TOKENS_PER_SIDE = 8
CLASSIFIER_ARGS = ("pooling", "head_dropout")
SATA_DEFAULTS = {"threshold": 0.1, "initial_scale": 0.5}
CB_DEFAULTS = {"ratio": 0.5}


def default_patch_size(image_size, tokens_per_side=NUM_TOKENS_PER_SIDE):
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


def technique_kwargs(techniques, overrides):
    """Backbone arguments that switch on `techniques`; explicit overrides win
    (a dict given for `suppression` / `context_broadcasting` is merged into
    the paper defaults)."""
    kwargs = {}
    if "spt" in techniques:
        kwargs["tokenizer"] = "spt"
    if "lsa" in techniques:
        kwargs["attention"] = "lsa"
    for technique, key, defaults in (
        ("sata", "suppression", SATA_DEFAULTS),
        ("cb", "context_broadcasting", CB_DEFAULTS),
    ):
        if technique in techniques:
            given = overrides.pop(key, None)
            kwargs[key] = {**defaults, **given} if isinstance(given, dict) else dict(defaults)
    kwargs.update(overrides)
    return kwargs


def build_vit(num_classes, image_size, techniques, **overrides):
    classifier_kwargs = {k: overrides.pop(k) for k in CLASSIFIER_ARGS if k in overrides}
    dtype = overrides.get("dtype")
    overrides.setdefault("patch_size", None)
    if overrides["patch_size"] is None:
        overrides["patch_size"] = default_patch_size(image_size)
    backbone_kwargs = {**VIT_SMALL_DATASET_CONFIG, **technique_kwargs(techniques, overrides)}
    backbone = ViTBackbone(image_size=image_size, **backbone_kwargs)
    return ImageClassifier(backbone, num_classes, dtype=dtype, **classifier_kwargs)


VIT_VARIANTS = {
    "vit": ((), "ViT, small-dataset config (depth 9, dim 192, 12 heads of 16)"),
    "sl_vit": (("spt", "lsa"), "ViT + shifted patch tokenization + locality self-attention"),
    "sata_vit": (("sata",), "ViT + suppression of accumulated trivial attention"),
    "cb_vit": (("cb",), "ViT + context broadcasting"),
    "sl_sata_cb_vit": (("spt", "lsa", "sata", "cb"), "ViT with SPT, LSA, SATA and CB together"),
}


# What `build_vit` passes on: the backbone's arguments (image_size is
# `create_model`'s) and the classifier's it routes.
VIT_ARGUMENTS = (*constructor_arguments(ViTBackbone, exclude=("image_size",)), *CLASSIFIER_ARGS)

for _name, (_techniques, _description) in VIT_VARIANTS.items():
    register_model(_name, build_vit, _techniques, _description, paper_lr=3e-3, arguments=VIT_ARGUMENTS)
