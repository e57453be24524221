"""Registered T2T-ViT variants: the small-dataset config of the papers' official code."""

from keras_smallvit.models.image_classifier import ImageClassifier
from keras_smallvit.models.registry import constructor_arguments
from keras_smallvit.models.registry import register_model
from keras_smallvit.models.t2t.t2t_backbone import T2TBackbone
from keras_smallvit.models.vit.vit_presets import CLASSIFIER_ARGS
from keras_smallvit.models.vit.vit_presets import technique_kwargs
from keras_smallvit.utils.validation import as_pair

# Official small-dataset T2T (T2T-ViT-14 with embed 256): soft splits of
# kernel 3, stride 2, padding 1 down to 8x8 tokens.
T2T_SMALL_DATASET_CONFIG = dict(
    hidden_dim=256, depth=12, num_heads=4, head_dim=64, mlp_ratio=2.0, token_dim=64
)
SOFT_SPLIT = (3, 2, 1)
NUM_TOKENS_PER_SIDE = 8


def default_soft_splits(image_size):
    """Stride-2 soft splits down to an 8x8 grid: two at 32 px, three at 64 px."""
    height, width = as_pair("image_size", image_size)
    if height != width or height % NUM_TOKENS_PER_SIDE or height < 2 * NUM_TOKENS_PER_SIDE:
        ratio = None
    else:
        ratio = height // NUM_TOKENS_PER_SIDE
    if ratio is None or ratio & (ratio - 1):
        raise ValueError(
            f"Invalid `image_size` {image_size}: the default soft splits halve a "
            f"square image down to {NUM_TOKENS_PER_SIDE}x{NUM_TOKENS_PER_SIDE}, so it "
            "must be 8 times a power of two, at least 16 (e.g. 32 or 64); or pass `soft_splits`."
        )
    return (SOFT_SPLIT,) * (ratio.bit_length() - 1)


def build_t2t(num_classes, image_size, techniques, **overrides):
    classifier_kwargs = {k: overrides.pop(k) for k in CLASSIFIER_ARGS if k in overrides}
    dtype = overrides.get("dtype")
    if overrides.get("soft_splits") is None:
        overrides["soft_splits"] = default_soft_splits(image_size)
    backbone_kwargs = {**T2T_SMALL_DATASET_CONFIG, **technique_kwargs(techniques, overrides)}
    backbone = T2TBackbone(image_size=image_size, **backbone_kwargs)
    return ImageClassifier(backbone, num_classes, dtype=dtype, **classifier_kwargs)


T2T_VARIANTS = {
    "t2t": ((), "T2T-ViT-14, small-dataset config (soft splits to 8x8, embed 256, depth 12)"),
    "sl_t2t": (("spt", "lsa"), "T2T-ViT + shifted patch tokenization + locality self-attention"),
    "sata_t2t": (("sata",), "T2T-ViT + suppression of accumulated trivial attention"),
}


# What `build_t2t` passes on: the backbone's arguments (image_size is
# `create_model`'s) and the classifier's it routes.
T2T_ARGUMENTS = (*constructor_arguments(T2TBackbone, exclude=("image_size",)), *CLASSIFIER_ARGS)

for _name, (_techniques, _description) in T2T_VARIANTS.items():
    register_model(_name, build_t2t, _techniques, _description, paper_lr=1e-3, arguments=T2T_ARGUMENTS)
