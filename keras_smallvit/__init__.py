"""keras_smallvit: Vision Transformers trained from scratch on small datasets, in Keras 3.

Lazy (PEP 562): `import keras_smallvit` imports no Keras, so that the
Keras-free modules (`keras_smallvit.training.config`, `keras_smallvit.data`,
`keras_smallvit.models.preset_table`, ...) and the command lines' checks
before Keras load in a fraction of a second. The attributes below import
their module on first use (`create_model`, `list_models` and
`export_for_serving` after `register_all()`). The package's Keras
classes (layers, models, optimizer) and the model presets are registered
once Keras and this package are both imported (`keras_smallvit.utils.registration`):
`keras.saving.load_model(path)` after `import keras_smallvit` works as
before; `keras_smallvit.register_all()` does it at once.
"""

from keras_smallvit.utils.lazy import lazy_attributes
from keras_smallvit.utils.registration import register_all
from keras_smallvit.utils.registration import watch_keras_import

__version__ = "0.1.0"

# name: the module it comes from.
_EXPORTS = {
    "create_model": "keras_smallvit.models.registry",
    "list_models": "keras_smallvit.models.registry",
    "export_for_serving": "keras_smallvit.export.serving",
}
# Submodules reachable as attributes, as when this package imported them.
_SUBMODULES = ("aal", "data", "diagnostics", "export", "kernels", "layers", "models", "optimizers", "training")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "register_all"])

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, _SUBMODULES, before=register_all)


watch_keras_import()
