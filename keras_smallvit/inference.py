"""Predictions on image files and arrays with a trained classifier's own
preprocessing: `model.predict_images(...)` and `python -m training.predict`."""

import csv
import dataclasses
import json

import keras
import numpy as np

from keras_smallvit.images import load_images
from keras_smallvit.images import normalize
from keras_smallvit.utils.files import write_text_atomically


@dataclasses.dataclass
class ImagePredictions:
    """Predictions of `predict_images`, one row per image.

    Attributes:
        sources: each image's file path, or `"array[i]"`.
        probabilities: float32 `(N, num_classes)`.
        top_k_classes: `(N, k)` class names, best first (the class index as a
            string when the model has no class names).
        top_k_probabilities: float32 `(N, k)`.
    """

    sources: list
    probabilities: np.ndarray
    top_k_classes: list
    top_k_probabilities: np.ndarray

    def rows(self):
        """One dict per image: `{"source", "top_k": [{"class", "probability"}, ...]}`."""
        return [
            {
                "source": source,
                "top_k": [{"class": c, "probability": float(p)} for c, p in zip(classes, probabilities)],
            }
            for source, classes, probabilities in zip(self.sources, self.top_k_classes, self.top_k_probabilities)
        ]

    def write_json(self, path):
        write_text_atomically(path, json.dumps(self.rows(), indent=2))

    def write_csv(self, path):
        """Columns `source, class_1, probability_1, ..., class_k, probability_k`."""
        k = self.top_k_probabilities.shape[1]
        import io

        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["source"] + [f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "probability")])
        for source, classes, probabilities in zip(self.sources, self.top_k_classes, self.top_k_probabilities):
            writer.writerow([source] + [v for c, p in zip(classes, probabilities) for v in (c, f"{p:.6f}")])
        write_text_atomically(path, text.getvalue())


def model_class_names(model):
    """The model's class names, else the class indices as strings."""
    names = getattr(model, "class_names", None)
    if names is None:
        names = [str(i) for i in range(int(model.output_shape[-1]))]
    return list(names)


def require_preprocessing(model, where="`model.preprocessing`"):
    preprocessing = getattr(model, "preprocessing", None)
    if preprocessing is None:
        raise ValueError(
            f"The model's preprocessing is unknown: it was not saved by a training run of this library (or by "
            f"an older version). Set {where} (e.g. `{{'scale': 1/255, 'mean': [...], 'std': [...]}}` as in the "
            "run's config.json normalization_mean/normalization_std), or load the run folder with "
            "`ImageClassifier.from_preset(run_dir)`."
        )
    return preprocessing


def preprocess(images, preprocessing):
    """uint8-valued images (already resized) -> the model's input, float32 NumPy."""
    return normalize(np.asarray(images, "float32"), preprocessing)


def predict_images(model, images, top_k=5, batch_size=32, verbose="auto"):
    """See `ClassifierUsageMixin.predict_images`."""
    preprocessing = require_preprocessing(model)
    num_classes = int(model.output_shape[-1])
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k:
        raise ValueError(f"Invalid `top_k`: {top_k!r}. Expected an integer >= 1.")
    top_k = min(top_k, num_classes)
    image_size = tuple(int(d) for d in model.input_shape[1:3])
    names, batch = load_images(images, image_size, int(model.input_shape[-1]), preprocessing["resize"])
    if len(batch):
        if verbose == "auto":
            verbose = 1 if len(batch) > batch_size else 0
        logits = model.predict(preprocess(batch, preprocessing), batch_size=batch_size, verbose=verbose)
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1))
    else:
        probabilities = np.zeros((0, num_classes), "float32")
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :top_k]
    class_names = model_class_names(model)
    return ImagePredictions(
        sources=names,
        probabilities=probabilities.astype("float32"),
        top_k_classes=[[class_names[i] for i in row] for row in order],
        top_k_probabilities=np.take_along_axis(probabilities, order, axis=-1).astype("float32"),
    )


