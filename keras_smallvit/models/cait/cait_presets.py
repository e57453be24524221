"""Registered CaiT variants: the small-dataset config of the papers' official code."""

from keras_smallvit.models.cait.cait_backbone import CaiTBackbone
from keras_smallvit.models.image_classifier import ImageClassifier
from keras_smallvit.models.registry import constructor_arguments
from keras_smallvit.models.registry import register_model
from keras_smallvit.models.vit.vit_presets import CLASSIFIER_ARGS
from keras_smallvit.models.vit.vit_presets import default_patch_size
from keras_smallvit.models.vit.vit_presets import technique_kwargs

# Official small-dataset CaiT (CaiT-XXS24 with dim 192): 8x8 tokens (patch 4
# at 32 px, 8 at 64 px), 24 patch-attention + 2 class-attention layers.
CAIT_SMALL_DATASET_CONFIG = dict(
    hidden_dim=192, depth=24, class_depth=2, num_heads=4, head_dim=64, mlp_ratio=2.0
)


def build_cait(num_classes, image_size, techniques, **overrides):
    classifier_kwargs = {k: overrides.pop(k) for k in CLASSIFIER_ARGS if k in overrides}
    dtype = overrides.get("dtype")
    if overrides.get("patch_size") is None:
        overrides["patch_size"] = default_patch_size(image_size)
    backbone_kwargs = {**CAIT_SMALL_DATASET_CONFIG, **technique_kwargs(techniques, overrides)}
    backbone = CaiTBackbone(image_size=image_size, **backbone_kwargs)
    return ImageClassifier(backbone, num_classes, dtype=dtype, **classifier_kwargs)


CAIT_VARIANTS = {
    "cait": ((), "CaiT, small-dataset config (24 + 2 layers, dim 192, 4 heads of 64, talking heads)"),
    "sl_cait": (("spt", "lsa"), "CaiT + shifted patch tokenization + locality self-attention"),
    "sata_cait": (("sata",), "CaiT + suppression of accumulated trivial attention"),
}


# What `build_cait` passes on: the backbone's arguments (image_size is
# `create_model`'s) and the classifier's it routes.
CAIT_ARGUMENTS = (*constructor_arguments(CaiTBackbone, exclude=("image_size",)), *CLASSIFIER_ARGS)

for _name, (_techniques, _description) in CAIT_VARIANTS.items():
    register_model(_name, build_cait, _techniques, _description, paper_lr=1e-3, arguments=CAIT_ARGUMENTS)
