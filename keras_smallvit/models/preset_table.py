"""The presets' names and what a configuration check needs of them, as plain data.

The model classes import Keras, and Keras its backend (seconds). This table
does not: `python -m training.train` checks `--model`, `--set model.<arg>=...`
and `--techniques` with it before Keras is imported, and `TrainConfig.validate`
and the registry check with the same functions (`check_model_settings`,
`check_model_arguments`), so the messages are the same either way.

`presets.py` is the truth: `tests/models/test_preset_table.py` holds this
table equal to what the registered presets give (`Preset.arguments()`, their
techniques and paper rates) and prints the rows to paste when they differ.
"""

import dataclasses
from typing import Optional

from keras_smallvit.utils.technique_names import TECHNIQUES  # noqa: F401 (the built-in names, here as before)
from keras_smallvit.utils.technique_names import known_techniques
from keras_smallvit.utils.validation import check_choice

# The `ImageClassifier` arguments a transformer preset routes to the head.
HEAD_ARGUMENTS = ("pooling", "head_dropout", "norm_before_pooling")
# `TechniqueSpec.field_names()` of the built-in techniques.
TECHNIQUE_FIELDS = (
    "tokenizer", "attention", "temperature_multiple", "suppression", "shift_directions", "shift_ratio",
    "context_broadcasting", "context_broadcasting_position",
)

# The constructor arguments of each model class (`constructor_arguments`,
# without `image_size`, and for the classifiers `num_classes`).
BACKBONE_ARGUMENTS = {
    "CaiTBackbone": (
        "attention_dropout", "class_depth", "depth", "drop_path_rate", "dropout", "dtype", "embedding_dropout",
        "head_dim", "hidden_dim", "layer_norm_epsilon", "layer_scale_init", "mlp_ratio", "num_channels",
        "num_heads", "patch_size", "seed", "techniques",
    ),
    "PiTBackbone": (
        "attention_dropout", "depths", "downsampling", "drop_path_rate", "dropout", "dtype", "embedding_dropout",
        "embedding_initializer_stddev", "head_dim", "hidden_dim", "layer_norm_epsilon", "mlp_ratio", "num_channels",
        "num_heads", "patch_size", "patch_stride", "pooling_pointwise", "seed", "techniques", "use_qkv_bias",
    ),
    "SwinBackbone": (
        "absolute_position_embedding", "attention_dropout", "depths", "downsampling", "drop_path_rate", "dropout",
        "dtype", "embedding_dropout", "hidden_dim", "layer_norm_epsilon", "mlp_ratio", "num_channels", "num_heads",
        "patch_size", "seed", "techniques", "use_qkv_bias", "window_size",
    ),
    "T2TBackbone": (
        "attention_dropout", "attention_input_residual", "depth", "drop_path_rate", "dropout", "dtype",
        "embedding_dropout", "head_dim", "hidden_dim", "layer_norm_epsilon", "mlp_ratio", "num_channels",
        "num_heads", "projection_norm", "seed", "soft_splits", "techniques", "token_dim", "token_mlp_ratio",
        "token_num_heads",
    ),
    "ViTBackbone": (
        "attention_dropout", "depth", "distillation_token", "drop_path_rate", "dropout", "dtype",
        "embedding_dropout", "embedding_initializer_stddev", "head_dim", "hidden_dim", "layer_norm_epsilon", "mlp_ratio", "num_channels",
        "num_heads", "patch_size", "seed", "techniques", "use_qkv_bias",
    ),
}
CLASSIFIER_ARGUMENTS = {
    "EfficientNet": ("class_names", "dropout", "dtype", "input_scale", "num_channels", "preprocessing", "variant"),
    "ResNet": (
        "batch_norm_epsilon", "batch_norm_momentum", "class_names", "dropout", "dtype", "num_channels",
        "preprocessing", "shortcut", "stage_blocks", "stage_widths", "stem", "stem_width",
    ),
}

# name: (model class, the techniques it switches on, the papers' learning rate)
PRESET_ROWS = {
    "cait": ("CaiTBackbone", (), 1e-3),
    "cb_pit": ("PiTBackbone", ("cb",), 1e-3),
    "cb_swin": ("SwinBackbone", ("cb",), 1e-3),
    "cb_vit": ("ViTBackbone", ("cb",), 3e-3),
    "deit_b": ("ViTBackbone", (), 0.001),
    "deit_b_distilled": ("ViTBackbone", (), 0.001),
    "deit_s": ("ViTBackbone", (), 0.001),
    "deit_s_distilled": ("ViTBackbone", (), 0.001),
    "deit_ti": ("ViTBackbone", (), 0.001),
    "deit_ti_distilled": ("ViTBackbone", (), 0.001),
    "efficientnet_b0": ("EfficientNet", (), 3e-3),
    "efficientnet_b3": ("EfficientNet", (), 3e-3),
    "l_vit": ("ViTBackbone", ("lsa",), 3e-3),
    "m_vit": ("ViTBackbone", ("diagonal_mask",), 3e-3),
    "pit": ("PiTBackbone", (), 1e-3),
    "pit_b": ("PiTBackbone", (), 0.001),
    "pit_s": ("PiTBackbone", (), 0.001),
    "pit_ti": ("PiTBackbone", (), 0.001),
    "pit_xs": ("PiTBackbone", (), 0.001),
    "resnet110": ("ResNet", (), 3e-3),
    "resnet34": ("ResNet", (), 3e-3),
    "resnet56": ("ResNet", (), 3e-3),
    "s_vit": ("ViTBackbone", ("spt",), 3e-3),
    "sata_cait": ("CaiTBackbone", ("sata",), 1e-3),
    "sata_pit": ("PiTBackbone", ("sata",), 1e-3),
    "sata_swin": ("SwinBackbone", ("sata",), 1e-3),
    "sata_t2t": ("T2TBackbone", ("sata",), 1e-3),
    "sata_vit": ("ViTBackbone", ("sata",), 3e-3),
    "sl_cait": ("CaiTBackbone", ("spt", "lsa"), 1e-3),
    "sl_pit": ("PiTBackbone", ("spt", "lsa"), 1e-3),
    "sl_pit_no_spool": ("PiTBackbone", ("spt", "lsa"), 1e-3),
    "sl_sata_cb_vit": ("ViTBackbone", ("spt", "lsa", "sata", "cb"), 3e-3),
    "sl_swin": ("SwinBackbone", ("spt", "lsa"), 1e-3),
    "sl_swin_no_spool": ("SwinBackbone", ("spt", "lsa"), 1e-3),
    "sl_t2t": ("T2TBackbone", ("spt", "lsa"), 1e-3),
    "sl_vit": ("ViTBackbone", ("spt", "lsa"), 3e-3),
    "swin": ("SwinBackbone", (), 1e-3),
    "swin_b": ("SwinBackbone", (), 0.001),
    "swin_s": ("SwinBackbone", (), 0.001),
    "swin_t": ("SwinBackbone", (), 0.001),
    "t2t": ("T2TBackbone", (), 1e-3),
    "t_vit": ("ViTBackbone", ("learnable_temperature",), 3e-3),
    "vit": ("ViTBackbone", (), 3e-3),
}


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the checks of a configuration need to know of a registered model.

    Attributes:
        arguments: the `create_model` overrides it takes (sorted names), or
            None when they cannot be known (then unchecked).
        techniques: the techniques it switches on by default.
        classifier: a whole CNN classifier: it takes no techniques.
        paper_lr: the papers' base learning rate of its family.
    """

    arguments: Optional[tuple]
    techniques: tuple = ()
    classifier: bool = False
    paper_lr: float = 1e-3


def preset_arguments(class_arguments, classifier, technique_fields=TECHNIQUE_FIELDS):
    """The `create_model` overrides of a preset (`Preset.arguments()`): its
    class's constructor arguments, then `"weights"` (a classifier: a local
    weights file, or "imagenet" where Keras publishes them) or the technique spec fields and the head arguments."""
    if classifier:
        return (*class_arguments, "weights")
    return (*class_arguments, *technique_fields, *HEAD_ARGUMENTS)


def _facts(model_class, techniques, paper_lr):
    classifier = model_class in CLASSIFIER_ARGUMENTS
    class_arguments = (CLASSIFIER_ARGUMENTS if classifier else BACKBONE_ARGUMENTS)[model_class]
    arguments = tuple(sorted(set(preset_arguments(class_arguments, classifier))))
    return ModelFacts(arguments, techniques, classifier, paper_lr)


# {name: ModelFacts} of the presets, as `registry.model_facts()` gives them.
PRESET_FACTS = {name: _facts(*row) for name, row in PRESET_ROWS.items()}

# The presets with ImageNet weights the Keras way (`weights="imagenet"`:
# keras.applications' files, in Keras' cache), and why the others have none.
IMAGENET_MODELS = tuple(sorted(name for name, row in PRESET_ROWS.items() if row[0] == "EfficientNet"))
NO_IMAGENET_WEIGHTS = (
    "keras.applications has no ResNet-34 (nor the CIFAR ResNet-56/110), keras-hub's ResNet presets "
    "(resnet_18/50/101/152_imagenet, ResNet-vd variants) hold no ResNet-34 of this layout, and keras-hub is not a "
    "dependency of keras_smallvit"
)


def check_model_arguments(name, facts, overrides):
    """Raises a `ValueError` naming the first of `overrides` (names) that
    model `name` (with `ModelFacts` `facts`) does not take."""
    if facts.arguments is None:
        return
    for argument in overrides:
        if argument not in facts.arguments:
            raise ValueError(
                f"Invalid argument `{argument}` for model {name!r}. Allowed: {', '.join(facts.arguments)}."
            )


def check_model_settings(models, name, overrides=(), techniques=None, argument="model"):
    """The checks of a model's name, `create_model` overrides and techniques
    that need no model class.

    Args:
        models: `{name: ModelFacts}` (`PRESET_FACTS`, or the live registry's
            `registry.model_facts()`).
        name: the model name.
        overrides: its `create_model` override names.
        techniques: technique names replacing its own, or None.
        argument: the name of the setting that names the model (in messages).

    Returns:
        The model's `ModelFacts`; raises a `ValueError` naming the setting
        and what it allows.
    """
    check_choice(argument, name, sorted(models))
    facts = models[name]
    check_model_arguments(name, facts, overrides)
    names = known_techniques()  # the one vocabulary, with the block techniques registered at run time
    for technique in techniques or ():
        check_choice("techniques", technique, names)
    if techniques and facts.classifier:
        # The registry's CNNs take no transformer techniques (their build
        # would refuse them only once the run has started).
        raise ValueError(
            f"Invalid `techniques` {tuple(techniques)!r} for model {name!r}: it is a CNN; the transformer "
            f"techniques ({', '.join(names)}) do not apply to it. Allowed values: () or None."
        )
    return facts
