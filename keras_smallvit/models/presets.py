"""The presets table: every registered variant as data (timm / keras-hub style).

One row per name: the model class, the papers' small-dataset architecture
config (from their official code), the techniques it switches on, the
paper learning rate and recipe hints, and head options. One generic builder
(`registry.build_preset`) turns a row into a model; adding a variant is
adding a row.
"""

import dataclasses
import functools

from keras_smallvit.models.backbone import default_patch_size
from keras_smallvit.models.cait.cait_backbone import CaiTBackbone
from keras_smallvit.models.cnn.efficientnet import EfficientNet
from keras_smallvit.models.cnn.resnet import ResNet
from keras_smallvit.models.pit.pit_backbone import PiTBackbone
from keras_smallvit.models.registry import Preset
from keras_smallvit.models.registry import register_preset
from keras_smallvit.models.swin.swin_backbone import SwinBackbone
from keras_smallvit.models.t2t.t2t_backbone import T2TBackbone
from keras_smallvit.models.t2t.t2t_backbone import default_soft_splits
from keras_smallvit.models.vit.vit_backbone import ViTBackbone


def patch_grid(tokens_per_side):
    """`image_defaults` of a patch size giving a `tokens_per_side` square grid."""
    return lambda image_size: {"patch_size": default_patch_size(image_size, tokens_per_side)}


def with_config(preset, **config):
    """`preset` with `config` added to its architecture config."""
    return dataclasses.replace(preset, config={**preset.config, **config})


def soft_split_grid(image_size):
    """`image_defaults` of T2T: the official soft splits down to 8x8."""
    return {"soft_splits": default_soft_splits(image_size)}


# The official small-dataset configs. ViT: 8x8 tokens (patch 4 at 32 px, 8 at
# 64 px). PiT: 16x16 tokens, widths 96-192-384, heads of 48 (SATA keeps the
# paper's model defaults, threshold 0.1 and s = 0.5; its 0.05 for PiT on
# CIFAR-100 is a training-config choice). Swin: 16x16 tokens, embed 96,
# windows of 4x4; the official head (LayerNorm on every token, average,
# Dense). CaiT (CaiT-XXS24 with dim 192): 8x8 tokens, 24 + 2 layers. T2T
# (T2T-ViT-14 with embed 256): soft splits of kernel 3, stride 2, padding 1
# down to 8x8 tokens.
VIT = functools.partial(
    Preset,
    ViTBackbone,
    dict(hidden_dim=192, depth=9, num_heads=12, head_dim=16, mlp_ratio=2.0),
    paper_lr=3e-3,
    image_defaults=patch_grid(8),
)
PIT = functools.partial(
    Preset,
    PiTBackbone,
    dict(hidden_dim=96, depths=(2, 6, 4), num_heads=(2, 4, 8), head_dim=48, mlp_ratio=2.0),
    image_defaults=patch_grid(16),
)
SWIN = functools.partial(
    Preset,
    SwinBackbone,
    dict(hidden_dim=96, depths=(2, 6, 4), num_heads=(3, 6, 12), window_size=4, mlp_ratio=2.0),
    head={"pooling": "average", "norm_before_pooling": True},
    image_defaults=patch_grid(16),
)
CAIT = functools.partial(
    Preset,
    CaiTBackbone,
    dict(hidden_dim=192, depth=24, class_depth=2, num_heads=4, head_dim=64, mlp_ratio=2.0),
    image_defaults=patch_grid(8),
)
T2T = functools.partial(
    Preset,
    T2TBackbone,
    dict(hidden_dim=256, depth=12, num_heads=4, head_dim=64, mlp_ratio=2.0, token_dim=64),
    image_defaults=soft_split_grid,
)
# Lee et al. 2021 (SPT/LSA), Sec. 4.1.3: "the initial learning rate of ViT and
# CNNs was set to 0.003" (the official code has no CNN; its default is 1e-3).
CNN = functools.partial(Preset, paper_lr=3e-3, stochastic_depth=False, classifier=True)
CIFAR_RESNET = dict(stage_widths=(16, 32, 64), stem="cifar", stem_width=16, shortcut="zero_pad")

PRESETS = {
    "vit": VIT(description="ViT, small-dataset config (depth 9, dim 192, 12 heads of 16)"),
    "sl_vit": VIT(techniques=("spt", "lsa"), description="ViT + shifted patch tokenization + locality self-attention"),
    "sata_vit": VIT(techniques=("sata",), description="ViT + suppression of accumulated trivial attention"),
    "cb_vit": VIT(techniques=("cb",), description="ViT + context broadcasting"),
    "sl_sata_cb_vit": VIT(techniques=("spt", "lsa", "sata", "cb"), description="ViT with SPT, LSA, SATA and CB together"),
    # The SPT/LSA paper's ablation rows (Table 4: T-, M-, L-ViT; Table 5: S-, L-, SL-ViT).
    "s_vit": VIT(techniques=("spt",), description="ViT + shifted patch tokenization (S-ViT)"),
    "l_vit": VIT(techniques=("lsa",), description="ViT + locality self-attention (L-ViT)"),
    "m_vit": VIT(techniques=("diagonal_mask",), description="ViT + LSA's diagonal mask only (M-ViT)"),
    "t_vit": VIT(techniques=("learnable_temperature",), description="ViT + LSA's learned temperature only (T-ViT)"),
    "pit": PIT(description="PiT, small-dataset config (widths 96-192-384, depths 2-6-4, heads of 48)"),
    # "spt" switches both the tokenizer and the pooling (S_pool): the
    # backbone's `downsampling=None` follows the tokenizer (Swin alike).
    "sl_pit": PIT(
        techniques=("spt", "lsa"),
        description="PiT + shifted patch tokenization (tokenizer and pooling) + locality self-attention",
    ),
    # SPT/LSA paper Table 2, "SL-PiT w/o S_pool": SPT at the input only.
    "sl_pit_no_spool": with_config(
        PIT(
            techniques=("spt", "lsa"),
            description="PiT + shifted patch tokenization (tokenizer only, conv pooling) + locality self-attention",
        ),
        downsampling="conv",
    ),
    "sata_pit": PIT(techniques=("sata",), description="PiT + suppression of accumulated trivial attention"),
    "cb_pit": PIT(techniques=("cb",), description="PiT + context broadcasting"),
    "swin": SWIN(description="Swin, small-dataset config (embed 96, depths 2-6-4, heads 3-6-12, window 4)"),
    "sl_swin": SWIN(
        techniques=("spt", "lsa"),
        description="Swin + shifted patch tokenization (tokenizer and merging) + locality self-attention",
    ),
    # SPT/LSA paper Table 2, "SL-Swin w/o S_pool": SPT at the input only.
    "sl_swin_no_spool": with_config(
        SWIN(
            techniques=("spt", "lsa"),
            description="Swin + shifted patch tokenization (tokenizer only, patch merging) + locality self-attention",
        ),
        downsampling="patch_merging",
    ),
    "sata_swin": SWIN(techniques=("sata",), description="Swin + suppression of accumulated trivial attention"),
    "cb_swin": SWIN(techniques=("cb",), description="Swin + context broadcasting"),
    "cait": CAIT(description="CaiT, small-dataset config (24 + 2 layers, dim 192, 4 heads of 64, talking heads)"),
    "sl_cait": CAIT(techniques=("spt", "lsa"), description="CaiT + shifted patch tokenization + locality self-attention"),
    "sata_cait": CAIT(techniques=("sata",), description="CaiT + suppression of accumulated trivial attention"),
    "t2t": T2T(description="T2T-ViT-14, small-dataset config (soft splits to 8x8, embed 256, depth 12)"),
    "sl_t2t": T2T(techniques=("spt", "lsa"), description="T2T-ViT + shifted patch tokenization + locality self-attention"),
    "sata_t2t": T2T(techniques=("sata",), description="T2T-ViT + suppression of accumulated trivial attention"),
    # The papers' CNN baselines (ResNet-56/110, EfficientNet-B0) and the
    # attention-link teachers (ResNet-34, EfficientNet-B3). `weights`: a local
    # `.weights.h5` / `.keras` file (nothing is downloaded).
    "resnet56": CNN(
        ResNet,
        dict(CIFAR_RESNET, stage_blocks=(9, 9, 9)),
        description="CIFAR ResNet-56 (He et al. 2016, option-A shortcuts, 0.85M parameters)",
    ),
    "resnet110": CNN(
        ResNet,
        dict(CIFAR_RESNET, stage_blocks=(18, 18, 18)),
        description="CIFAR ResNet-110 (He et al. 2016, option-A shortcuts, 1.7M parameters)",
    ),
    "resnet34": CNN(
        ResNet,
        dict(stage_blocks=(3, 4, 6, 3), stage_widths=(64, 128, 256, 512), stem="imagenet", stem_width=64, shortcut="projection"),
        description="ResNet-34 (ImageNet layout; stem='cifar' for small images), attention-link teacher",
    ),
    "efficientnet_b0": CNN(
        EfficientNet, dict(variant="b0"), description="EfficientNet-B0 (keras.applications graph, random init)"
    ),
    "efficientnet_b3": CNN(
        EfficientNet,
        dict(variant="b3"),
        description="EfficientNet-B3 (keras.applications graph, random init), attention-link teacher",
    ),
}

for _name, _preset in PRESETS.items():
    register_preset(_name, _preset)
