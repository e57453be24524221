"""Registered CNNs: the papers' baselines (ResNet-56/110, EfficientNet-B0) and
the attention-link teachers (ResNet-34, EfficientNet-B3).

`create_model(name, num_classes=..., image_size=..., weights=None, **overrides)`:
`weights` is the path of a local `.weights.h5` / `.keras` file of the same
architecture (nothing is ever downloaded; `"imagenet"` raises a ValueError);
other keyword arguments override the constructor arguments of `ResNet` /
`EfficientNet`. CNNs take no transformer techniques.
"""

from keras_smallvit.models.cnn.cnn_common import check_no_techniques
from keras_smallvit.models.cnn.cnn_common import check_weights_path
from keras_smallvit.models.cnn.cnn_common import load_weights_file
from keras_smallvit.models.cnn.efficientnet import EfficientNet
from keras_smallvit.models.cnn.resnet import ResNet
from keras_smallvit.models.registry import constructor_arguments
from keras_smallvit.models.registry import register_model

# Lee et al. 2021 (SPT/LSA), Sec. 4.1.3: "the initial learning rate of ViT and
# CNNs was set to 0.003" (the official code has no CNN; its default is 1e-3).
CNN_PAPER_LR = 3e-3

CNN_PRESETS = {
    "resnet56": (
        ResNet,
        dict(stage_blocks=(9, 9, 9), stage_widths=(16, 32, 64), stem="cifar", stem_width=16, shortcut="zero_pad"),
        "CIFAR ResNet-56 (He et al. 2016, option-A shortcuts, 0.85M parameters)",
    ),
    "resnet110": (
        ResNet,
        dict(stage_blocks=(18, 18, 18), stage_widths=(16, 32, 64), stem="cifar", stem_width=16, shortcut="zero_pad"),
        "CIFAR ResNet-110 (He et al. 2016, option-A shortcuts, 1.7M parameters)",
    ),
    "resnet34": (
        ResNet,
        dict(
            stage_blocks=(3, 4, 6, 3),
            stage_widths=(64, 128, 256, 512),
            stem="imagenet",
            stem_width=64,
            shortcut="projection",
        ),
        "ResNet-34 (ImageNet layout; stem='cifar' for small images), attention-link teacher",
    ),
    "efficientnet_b0": (EfficientNet, dict(variant="b0"), "EfficientNet-B0 (keras.applications graph, random init)"),
    "efficientnet_b3": (
        EfficientNet,
        dict(variant="b3"),
        "EfficientNet-B3 (keras.applications graph, random init), attention-link teacher",
    ),
}


def make_cnn_builder(name, model_class, defaults):
    def build(num_classes, image_size, techniques, weights=None, **overrides):
        # Argument errors first, before the (slow) build.
        check_no_techniques(name, techniques)
        check_weights_path(weights)
        model = model_class(**{**defaults, **overrides, "num_classes": num_classes, "image_size": image_size})
        return load_weights_file(model, weights)

    build.__name__ = f"build_{name}"
    return build


for _name, (_class, _defaults, _description) in CNN_PRESETS.items():
    register_model(
        _name,
        make_cnn_builder(_name, _class, _defaults),
        (),
        _description,
        paper_lr=CNN_PAPER_LR,
        stochastic_depth=False,  # no drop path in these CNNs
        # The class's arguments (num_classes / image_size are create_model's) and `weights`.
        arguments=(*constructor_arguments(_class, exclude=("num_classes", "image_size")), "weights"),
    )
