"""Export a classifier for serving: `export_for_serving(model, path, format)`.

    python -m keras_smallvit.export runs/x/best.keras runs/x/saved_model
    python -m keras_smallvit.export runs/x/best.keras runs/x/model.onnx --format onnx
"""

from keras_smallvit.export.serving import FORMATS
from keras_smallvit.export.serving import export_for_serving
