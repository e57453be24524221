"""Registered Swin variants: the small-dataset config of the papers' official code."""

from keras_smallvit.models.image_classifier import ImageClassifier
from keras_smallvit.models.pit.pit_presets import default_patch_size
from keras_smallvit.models.registry import constructor_arguments
from keras_smallvit.models.registry import register_model
from keras_smallvit.models.swin.swin_backbone import SwinBackbone
from keras_smallvit.models.vit.vit_presets import CLASSIFIER_ARGS
from keras_smallvit.models.vit.vit_presets import technique_kwargs

# Official small-dataset Swin: 16x16 tokens (patch 2 at 32 px, 4 at 64 px),
# embed 96, windows of 4x4.
SWIN_SMALL_DATASET_CONFIG = dict(hidden_dim=96, depths=(2, 6, 4), num_heads=(3, 6, 12), window_size=4, mlp_ratio=2.0)


def build_swin(num_classes, image_size, techniques, **overrides):
    # The official head: LayerNorm on every token, average, Dense.
    classifier_kwargs = {"pooling": "average", "norm_before_pooling": True}
    classifier_kwargs.update({k: overrides.pop(k) for k in (*CLASSIFIER_ARGS, "norm_before_pooling") if k in overrides})
    dtype = overrides.get("dtype")
    if overrides.get("patch_size") is None:
        overrides["patch_size"] = default_patch_size(image_size)
    # "spt" switches both the tokenizer and the patch merging: the
    # backbone's `downsampling=None` follows the tokenizer.
    backbone_kwargs = {**SWIN_SMALL_DATASET_CONFIG, **technique_kwargs(techniques, overrides)}
    backbone = SwinBackbone(image_size=image_size, **backbone_kwargs)
    return ImageClassifier(backbone, num_classes, dtype=dtype, **classifier_kwargs)


SWIN_VARIANTS = {
    "swin": ((), "Swin, small-dataset config (embed 96, depths 2-6-4, heads 3-6-12, window 4)"),
    "sl_swin": (("spt", "lsa"), "Swin + shifted patch tokenization (tokenizer and merging) + locality self-attention"),
    "sata_swin": (("sata",), "Swin + suppression of accumulated trivial attention"),
    "cb_swin": (("cb",), "Swin + context broadcasting"),
}


# What `build_swin` passes on: the backbone's arguments (image_size is
# `create_model`'s) and the classifier's it routes.
SWIN_ARGUMENTS = (*constructor_arguments(SwinBackbone, exclude=("image_size",)), *(*CLASSIFIER_ARGS, "norm_before_pooling"))

for _name, (_techniques, _description) in SWIN_VARIANTS.items():
    register_model(_name, build_swin, _techniques, _description, paper_lr=1e-3, arguments=SWIN_ARGUMENTS)
