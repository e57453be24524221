"""Backbones, the classifier head and the model registry.

Lazy (PEP 562): `keras_smallvit.models.preset_table` (the presets' data,
no Keras) imports without the model classes. Any class or function below
imports every model module and registers the presets first
(`keras_smallvit.register_all()`), as this package's `__init__` did; a
submodule imports alone.
"""

from keras_smallvit.utils.lazy import lazy_attributes
from keras_smallvit.utils.registration import register_all

# name: the module it comes from.
_EXPORTS = {
    "class_token_attention": "keras_smallvit.models.attention_maps",
    "ImageClassifier": "keras_smallvit.models.image_classifier",
    "TokenPooling": "keras_smallvit.models.image_classifier",
    "TECHNIQUES": "keras_smallvit.models.registry",
    "create_model": "keras_smallvit.models.registry",
    "list_models": "keras_smallvit.models.registry",
    "register_model": "keras_smallvit.models.registry",
    "ViTBackbone": "keras_smallvit.models.vit",
    "PiTBackbone": "keras_smallvit.models.pit",
    "SwinBackbone": "keras_smallvit.models.swin",
    "CaiTBackbone": "keras_smallvit.models.cait",
    "T2TBackbone": "keras_smallvit.models.t2t",
    "EfficientNet": "keras_smallvit.models.cnn",
    "ResNet": "keras_smallvit.models.cnn",
}
# Submodules reachable as attributes, as when this package imported them.
_SUBMODULES = (
    "attention_maps", "backbone", "cait", "cnn", "image_classifier", "pit", "preset_folder", "preset_table",
    "presets", "registry", "swin", "t2t", "usage", "vit",
)

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, _SUBMODULES, before=register_all)
