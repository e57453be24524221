"""Export a classifier for serving: `export_for_serving(model, path, format)`.

    python -m keras_smallvit.export runs/x/best.keras runs/x/saved_model
    python -m keras_smallvit.export runs/x/best.keras runs/x/model.onnx --format onnx

Lazy (PEP 562): `python -m keras_smallvit.export` imports this package
before its `main` runs, and `main` quiets the frameworks' console before it
imports Keras.
"""

from keras_smallvit.utils.lazy import lazy_attributes

_EXPORTS = {"FORMATS": "keras_smallvit.export.serving", "export_for_serving": "keras_smallvit.export.serving"}
_SUBMODULES = ("serving",)

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, _SUBMODULES)
