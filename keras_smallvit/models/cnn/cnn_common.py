"""What the CNN baselines and teachers share: feature-map models, weight files
(local, or ImageNet's from Keras' cache), and the check that keeps transformer
techniques away from them."""

import os

import keras

from keras_smallvit.layers.techniques import technique_names
from keras_smallvit.models.preset_table import IMAGENET_MODELS
from keras_smallvit.models.preset_table import NO_IMAGENET_WEIGHTS
from keras_smallvit.utils.validation import as_pair

WEIGHTS_EXTENSIONS = (".weights.h5", ".keras")


class FeatureMapsMixin:
    """Gives a functional CNN `feature_model()`: its intermediate feature maps.

    The model sets `stage_output_names` (the output layer of every stage, from
    the highest resolution to the lowest) before using the mixin.
    """

    stage_output_names = ()

    @property
    def normalization_output_names(self):
        """Names of every BatchNormalization layer, in graph order: the
        "activation maps after the normalisation of every convolution block"
        that the attention-link (AAL) paper links ViT attention to."""
        return tuple(
            layer.name for layer in self.layers if isinstance(layer, keras.layers.BatchNormalization)
        )

    def feature_model(self, layer_names=None):
        """A model sharing this one's weights that maps images to feature maps.

        Args:
            layer_names: names of the layers whose outputs to return; defaults
                to `stage_output_names`. Any layer of the model works, e.g.
                `normalization_output_names`.

        Returns:
            A `keras.Model` from the same image input to a dict
            `{layer_name: (B, h, w, channels) feature map}` (one forward pass;
            maps in the model's compute dtype, e.g. float16 under
            `mixed_float16`).
        """
        names = tuple(self.stage_output_names if layer_names is None else layer_names)
        if not names:
            raise ValueError("Invalid `layer_names`: expected at least one layer name.")
        known = {layer.name: layer for layer in self.layers}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"Invalid `layer_names`: {unknown} are not layers of {self.name!r}. "
                f"Allowed values: any layer name, e.g. the stage outputs {list(self.stage_output_names)}."
            )
        outputs = {name: known[name].output for name in names}
        return keras.Model(self.input, outputs, name=f"{self.name}_features")


def check_no_techniques(name, techniques):
    """CNN entries of the registry take no transformer techniques."""
    if tuple(techniques):
        raise ValueError(
            f"Invalid `techniques` for {name!r}: {tuple(techniques)!r}. {name!r} is a CNN; "
            f"the transformer techniques ({', '.join(technique_names())}) do not apply to it. "
            "Allowed values: () or None."
        )


def check_image_size(image_size, min_size=1):
    """Validated `(height, width)` with both sides at least `min_size`."""
    height_width = as_pair("image_size", image_size)
    if min(height_width) < min_size:
        raise ValueError(
            f"Invalid `image_size`: {image_size!r}. Expected sides of at least {min_size} pixels."
        )
    return height_width


IMAGENET_SUPPORTED = f"{', '.join(IMAGENET_MODELS)} (any variant b0...b7): keras.applications' files"


def check_weights_path(weights, model_class=None):
    """Validates the `weights` argument without touching the network.

    Args:
        weights: None, `"imagenet"` (models with `load_imagenet_weights`:
            the EfficientNets), or the path of a local `.weights.h5` file
            (`model.save_weights(...)`) or `.keras` file (`model.save(...)`).
        model_class: the class the weights are for (checks `"imagenet"`);
            None: `"imagenet"` is left to the loading.

    Returns:
        `"imagenet"`, the path as a string, or None.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: `weights="imagenet"` for a model without ImageNet
            weights, or an unsupported file type.
    """
    if weights is None:
        return None
    allowed = (
        f"None, 'imagenet' ({IMAGENET_SUPPORTED}), or a path to a {' or '.join(WEIGHTS_EXTENSIONS)} file "
        "saved by Keras 3 from the same architecture"
    )
    if isinstance(weights, str) and weights.lower() == "imagenet":
        if model_class is not None and not hasattr(model_class, "load_imagenet_weights"):
            raise ValueError(
                f"Invalid `weights`: 'imagenet' for {model_class.__name__}: no ImageNet weights reach it the Keras "
                f"way ({NO_IMAGENET_WEIGHTS if model_class.__name__ == 'ResNet' else 'none are published for it'}). "
                f"Give a local weights file of this model instead. Allowed values: {allowed}."
            )
        return "imagenet"
    try:
        path = os.fspath(weights)
    except TypeError:
        raise ValueError(f"Invalid `weights`: {weights!r}. Allowed values: {allowed}.") from None
    if not path.endswith(WEIGHTS_EXTENSIONS):
        raise ValueError(f"Invalid `weights`: {path!r}. Allowed values: {allowed}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file not found: {path!r} (argument `weights`).")
    return path


def load_weights_file(model, weights):
    """Loads weights into `model`: a local Keras file, or `"imagenet"`.

    Args:
        model: the model to fill (same architecture as the file's).
        weights: None (keep the random initialisation), `"imagenet"`
            (`model.load_imagenet_weights()`: Keras' cache, downloaded there
            once if absent), or the path of a `.weights.h5` file
            (`model.save_weights(...)`) or a `.keras` file (`model.save(...)`)
            of the same architecture.

    Returns:
        `model`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: `weights="imagenet"` for a model without ImageNet
            weights, or an unsupported file type.
        WeightsUnavailableError: ImageNet weights neither cached nor
            downloadable.
    """
    path = check_weights_path(weights, type(model))
    if path == "imagenet":
        return model.load_imagenet_weights()
    if path is not None:
        model.load_weights(path)
    return model
