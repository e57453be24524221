"""Registered PiT variants: the small-dataset config of the papers' official code."""

from keras_smallvit.models.image_classifier import ImageClassifier
from keras_smallvit.models.pit.pit_backbone import PiTBackbone
from keras_smallvit.models.registry import constructor_arguments
from keras_smallvit.models.registry import register_model
from keras_smallvit.models.vit.vit_presets import CLASSIFIER_ARGS
from keras_smallvit.models.vit.vit_presets import default_patch_size as vit_default_patch_size
from keras_smallvit.models.vit.vit_presets import technique_kwargs

# Official small-dataset PiT: 16x16 tokens (patch 2 at 32 px, 4 at 64 px),
# widths 96-192-384, heads of 48. SATA keeps the paper's model defaults
# (threshold 0.1, s = 0.5); its 0.05 for PiT on CIFAR-100 is a training-config
# choice, passed as `suppression={"threshold": 0.05}`.
PIT_SMALL_DATASET_CONFIG = dict(hidden_dim=96, depths=(2, 6, 4), num_heads=(2, 4, 8), head_dim=48, mlp_ratio=2.0)
NUM_TOKENS_PER_SIDE = 16


def default_patch_size(image_size):
    """Patch size that gives PiT's and Swin's 16x16 token grid."""
    return vit_default_patch_size(image_size, NUM_TOKENS_PER_SIDE)


def build_pit(num_classes, image_size, techniques, **overrides):
    classifier_kwargs = {k: overrides.pop(k) for k in CLASSIFIER_ARGS if k in overrides}
    dtype = overrides.get("dtype")
    if overrides.get("patch_size") is None:
        overrides["patch_size"] = default_patch_size(image_size)
    # "spt" switches both the tokenizer and the pooling (S_pool): the
    # backbone's `downsampling=None` follows the tokenizer.
    backbone_kwargs = {**PIT_SMALL_DATASET_CONFIG, **technique_kwargs(techniques, overrides)}
    backbone = PiTBackbone(image_size=image_size, **backbone_kwargs)
    return ImageClassifier(backbone, num_classes, dtype=dtype, **classifier_kwargs)


PIT_VARIANTS = {
    "pit": ((), "PiT, small-dataset config (widths 96-192-384, depths 2-6-4, heads of 48)"),
    "sl_pit": (("spt", "lsa"), "PiT + shifted patch tokenization (tokenizer and pooling) + locality self-attention"),
    "sata_pit": (("sata",), "PiT + suppression of accumulated trivial attention"),
    "cb_pit": (("cb",), "PiT + context broadcasting"),
}


# What `build_pit` passes on: the backbone's arguments (image_size is
# `create_model`'s) and the classifier's it routes.
PIT_ARGUMENTS = (*constructor_arguments(PiTBackbone, exclude=("image_size",)), *CLASSIFIER_ARGS)

for _name, (_techniques, _description) in PIT_VARIANTS.items():
    register_model(_name, build_pit, _techniques, _description, paper_lr=1e-3, arguments=PIT_ARGUMENTS)
