"""What a trained classifier carries to be used correctly: its input
preprocessing and its class names.

Both live in the model's config (like keras-hub's `ImageClassifier`
carries its preprocessor), so a `.keras` file, `keras.saving.load_model`, a
preset folder, the export and `predict_images` all see them with no side
file. A model built fresh has neither (`None`): the training run sets them.

Preprocessing, as the training pipeline feeds the model (raw uint8 pixels
`x`, any size): `resize` the image to the model's input size (by the run's
policy: "squash", "crop" or "pad", see `keras_smallvit.images`), round it
to uint8, then `(x * scale - mean) / std`.
"""

import numbers

import numpy as np

from keras_smallvit.images import RESIZE_POLICIES
from keras_smallvit.utils.validation import check_choice
# The training pipeline without normalisation: pixels / 255.
DEFAULT_PREPROCESSING = {"scale": 1 / 255.0, "mean": None, "std": None, "resize": "squash"}


def check_channel_values(label, value, channels, positive):
    """None, one float, or a list of `channels` floats (finite; > 0 with
    `positive`); a `ValueError` naming `label` otherwise."""
    if value is None:
        return None
    try:
        values = [float(v) for v in np.ravel(np.asarray(value, dtype="float64"))]
    except (TypeError, ValueError):
        values = []
    allowed = (1, channels) if channels else (len(values),)
    valid = values and len(values) in allowed and all(np.isfinite(v) and (v > 0 or not positive) for v in values)
    if isinstance(value, (bool, str)) or not valid:
        count = f"{channels} numbers (one per channel)" if channels else "one number per channel"
        raise ValueError(
            f"Invalid {label}: {value!r}. Expected None, a number or {count}"
            + (", all finite and > 0." if positive else ", all finite.")
        )
    return [float(v) for v in values] if len(values) > 1 else float(values[0])


def check_preprocessing(preprocessing, channels=None):
    """The validated preprocessing dict `{"scale", "mean", "std", "resize"}`.

    Missing keys take `DEFAULT_PREPROCESSING`'s values; other keys, a
    `scale` that is not a finite number > 0, a `mean`/`std` that is not one
    finite number or one per channel (`std` > 0), or an unknown `resize`
    raise a `ValueError` naming the key and the allowed values.

    Args:
        preprocessing: a dict (or None: the defaults).
        channels: the model's input channels, when known.
    """
    if preprocessing is None:
        preprocessing = {}
    if not isinstance(preprocessing, dict):
        raise ValueError(
            f"Invalid `preprocessing`: {preprocessing!r}. Expected a dict with keys {list(DEFAULT_PREPROCESSING)}."
        )
    unknown = sorted(set(preprocessing) - set(DEFAULT_PREPROCESSING))
    if unknown:
        raise ValueError(
            f"Invalid `preprocessing` keys {unknown}. Allowed keys: {', '.join(DEFAULT_PREPROCESSING)}."
        )
    merged = {**DEFAULT_PREPROCESSING, **preprocessing}
    scale = merged["scale"]
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"Invalid `preprocessing` 'scale': {scale!r}. Expected a finite number > 0 (1/255 for the training "
            "pipeline)."
        )
    return {
        "scale": float(scale),
        "mean": check_channel_values("`preprocessing` 'mean'", merged["mean"], channels, positive=False),
        "std": check_channel_values("`preprocessing` 'std'", merged["std"], channels, positive=True),
        "resize": check_choice("preprocessing 'resize'", merged["resize"], RESIZE_POLICIES),
    }


def check_class_names(class_names, num_classes):
    """`class_names` as a tuple of `num_classes` distinct non-empty strings, or None."""
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)) or not hasattr(class_names, "__len__"):
        raise ValueError(f"Invalid `class_names`: {class_names!r}. Expected a list of {num_classes} strings.")
    names = tuple(class_names)
    problems = []
    if len(names) != num_classes:
        problems.append(f"{len(names)} names for {num_classes} classes")
    if not all(isinstance(n, str) and n for n in names):
        problems.append("every name must be a non-empty string")
    duplicates = sorted({n for n in names if names.count(n) > 1}, key=str)
    if duplicates:
        problems.append(f"duplicated names {duplicates[:5]}")
    if problems:
        raise ValueError(
            f"Invalid `class_names` ({'; '.join(problems)}). Expected {num_classes} distinct non-empty strings, "
            "one per output class in label order."
        )
    return names


class ClassifierUsageMixin:
    """`preprocessing` and `class_names` for a functional classifier.

    The model calls `init_usage(preprocessing, class_names)` at the end of
    its `__init__` and adds `usage_config()` to its `get_config()`; both are
    then in every `.keras` file of it. It needs `num_classes` and a 4-D
    image input.
    """

    def init_usage(self, preprocessing=None, class_names=None):
        self.preprocessing = preprocessing
        self.class_names = class_names

    @property
    def preprocessing(self):
        """The input preprocessing `{"scale", "mean", "std", "resize"}`
        (see the module docstring), or None when unknown. Settable."""
        value = self._usage_preprocessing
        return None if value is None else {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in value}

    @preprocessing.setter
    def preprocessing(self, value):
        # Stored as a tuple of pairs: Keras tracks (wraps) dicts set on a layer.
        checked = None if value is None else check_preprocessing(value, self.input_shape[-1])
        self._usage_preprocessing = None if checked is None else tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in checked.items()
        )

    @property
    def class_names(self):
        """The names of the output classes in label order (a list), or None. Settable."""
        return None if self._usage_class_names is None else list(self._usage_class_names)

    @class_names.setter
    def class_names(self, value):
        self._usage_class_names = check_class_names(value, self.num_classes)

    def usage_config(self):
        """The `get_config()` entries of `preprocessing` and `class_names`."""
        return {"preprocessing": self.preprocessing, "class_names": self.class_names}

    def predict_images(self, images, top_k=5, batch_size=32, verbose="auto"):
        """Class probabilities and the top-k class names of images, with this
        model's preprocessing (as training and serving apply it).

        Args:
            images: image file paths and folders (every image file below a
                folder, sorted; jpg, jpeg, png, bmp, gif), or uint8 arrays
                `(H, W, C)` of any size, or one uint8 batch `(N, H, W, C)`.
            top_k: how many classes per image (at most `num_classes`).
            batch_size: images per forward pass.
            verbose: a progress bar for more than one batch ("auto", 0 or 1).

        Returns:
            An `ImagePredictions` (`sources`, `probabilities`,
            `top_k_classes`, `top_k_probabilities`; `.rows()`,
            `.write_csv(path)`, `.write_json(path)`).

        Raises:
            ValueError: the model's preprocessing is unknown (set
                `model.preprocessing`), or an image cannot be read (named).
        """
        from keras_smallvit.inference import predict_images

        return predict_images(self, images, top_k=top_k, batch_size=batch_size, verbose=verbose)

