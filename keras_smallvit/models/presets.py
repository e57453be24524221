"""The presets table: every registered variant as data (timm / keras-hub style).

One row per name: the model class, the papers' small-dataset architecture
config (from their official code), the techniques it switches on, the
paper learning rate and recipe hints, and head options. One generic builder
(`build_preset`, here beside the table) turns a row into a model; adding a
variant is adding a row. Importing this module registers every row
(`registry.register_model`); the registry imports no model module.
"""

import dataclasses
import functools
import math
from typing import Callable
from typing import Optional

from keras_smallvit.layers.techniques import TechniqueSpec
from keras_smallvit.models.backbone import default_patch_size
from keras_smallvit.models.cait.cait_backbone import CaiTBackbone
from keras_smallvit.models.cnn.cnn_common import check_no_techniques
from keras_smallvit.models.cnn.cnn_common import check_weights_path
from keras_smallvit.models.cnn.cnn_common import load_weights_file
from keras_smallvit.models.cnn.efficientnet import EfficientNet
from keras_smallvit.models.cnn.resnet import ResNet
from keras_smallvit.models.image_classifier import ImageClassifier
from keras_smallvit.models.pit.pit_backbone import PiTBackbone
from keras_smallvit.models.preset_table import HEAD_ARGUMENTS
from keras_smallvit.models.preset_table import preset_arguments
from keras_smallvit.models.registry import register_model
from keras_smallvit.models.swin.swin_backbone import SwinBackbone
from keras_smallvit.models.t2t.t2t_backbone import T2TBackbone
from keras_smallvit.models.t2t.t2t_backbone import default_soft_splits
from keras_smallvit.models.vit.vit_backbone import ViTBackbone
from keras_smallvit.utils.model_arguments import constructor_arguments
from keras_smallvit.utils.validation import as_pair


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
            techniques; `weights` may be given: a local file, or "imagenet").
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
        names = techniques.names if isinstance(techniques, TechniqueSpec) else techniques
        check_no_techniques(name or preset.model_class.__name__, names)
        weights = overrides.pop("weights", None)
        check_weights_path(weights, preset.model_class)  # a bad `weights` fails before the model is built
        model = preset.model_class(**{**preset.config, **overrides, "num_classes": num_classes, "image_size": image_size})
        return load_weights_file(model, weights)
    head = {**preset.head, **{k: overrides.pop(k) for k in HEAD_ARGUMENTS if k in overrides}}
    spec_fields = {k: overrides.pop(k) for k in TechniqueSpec.field_names() if k in overrides}
    spec = TechniqueSpec.resolve(techniques, **spec_fields)
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
# The ImageNet configs of the original papers (at 224 px), as timm builds
# them. DeiT (Touvron et al. 2021): ViT with patch 16, depth 12, heads of 64,
# MLP ratio 4, qkv bias, LayerNorm eps 1e-6; the distilled models add the
# distillation token and head. PiT (Heo et al. 2021): overlapping patches
# (kernel 16, stride 8; PiT-B 14 and 7), heads of 32/48/64, depthwise
# pooling without the pointwise Dense. Swin (Liu et al. 2021): patch 4,
# window 7, 4 stages, no absolute position embedding. `paper_lr`: 1e-3, the
# three papers' rate at their batch 1024 (DeiT: 5e-4 x batch / 512).
DEIT = dict(
    patch_size=16, depth=12, head_dim=64, mlp_ratio=4.0, use_qkv_bias=True, layer_norm_epsilon=1e-6,
    embedding_initializer_stddev=0.02,
)
PIT_IMAGENET = dict(
    patch_size=16, patch_stride=8, depths=(2, 6, 4), mlp_ratio=4.0, pooling_pointwise=False, use_qkv_bias=True,
    layer_norm_epsilon=1e-6, embedding_initializer_stddev=0.02,
)
SWIN_IMAGENET = dict(patch_size=4, window_size=7, mlp_ratio=4.0, absolute_position_embedding=False)
SWIN_HEAD = {"pooling": "average", "norm_before_pooling": True}


def deit(width, heads, size, distilled=False):
    config = dict(DEIT, hidden_dim=width, num_heads=heads, **({"distillation_token": True} if distilled else {}))
    what = f"DeiT-{size}{' distilled' if distilled else ''} (Touvron et al. 2021; patch 16, dim {width}, {heads} heads, 224 px)"
    if distilled:
        what += ": distillation token and head, the heads' mean at inference"
    return Preset(ViTBackbone, config, description=what, paper_lr=1e-3)


def pit_imagenet(size, width, heads, head_dim, **config):
    stride = config.get("patch_stride", 8)
    return Preset(
        PiTBackbone,
        dict(PIT_IMAGENET, hidden_dim=width, num_heads=heads, head_dim=head_dim, **config),
        description=f"PiT-{size} (Heo et al. 2021; ImageNet config, overlapping patches of stride {stride}, 224 px)",
    )


def swin_imagenet(size, width, depths, heads):
    return Preset(
        SwinBackbone,
        dict(SWIN_IMAGENET, hidden_dim=width, depths=depths, num_heads=heads),
        description=f"Swin-{size} (Liu et al. 2021; ImageNet config, patch 4, window 7, 224 px)",
        head=SWIN_HEAD,
    )


IMAGENET_PRESETS = {
    "deit_ti": deit(192, 3, "Ti"),
    "deit_s": deit(384, 6, "S"),
    "deit_b": deit(768, 12, "B"),
    "deit_ti_distilled": deit(192, 3, "Ti", distilled=True),
    "deit_s_distilled": deit(384, 6, "S", distilled=True),
    "deit_b_distilled": deit(768, 12, "B", distilled=True),
    "pit_ti": pit_imagenet("Ti", 64, (2, 4, 8), 32),
    "pit_xs": pit_imagenet("XS", 96, (2, 4, 8), 48),
    "pit_s": pit_imagenet("S", 144, (3, 6, 12), 48),
    "pit_b": pit_imagenet("B", 256, (4, 8, 16), 64, patch_size=14, patch_stride=7, depths=(3, 6, 4)),
    "swin_t": swin_imagenet("T", 96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_s": swin_imagenet("S", 96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_b": swin_imagenet("B", 128, (2, 2, 18, 2), (4, 8, 16, 32)),
}

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
    # `.weights.h5` / `.keras` file, or "imagenet" for the EfficientNets
    # (keras.applications' file, from Keras' cache).
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

PRESETS.update(IMAGENET_PRESETS)

for _name, _preset in PRESETS.items():
    register_preset(_name, _preset)
