"""ImageNet weights the Keras way: the `keras.applications` files, fetched
once with `keras.utils.get_file` into Keras' cache (`$KERAS_HOME/models`,
default `~/.keras/models`), then read from there, with no network."""

import hashlib
import os

import keras
import numpy as np

# Where `keras.applications` downloads its weight files from.
KERAS_APPLICATIONS_ORIGIN = "https://storage.googleapis.com/keras-applications/"
# EfficientNet variant -> (file, its MD5) of the `include_top=False` ImageNet
# weights, as `keras.applications.EfficientNetB*` fetch them (copied from
# keras/src/applications/efficientnet.py, Keras 3.15).
EFFICIENTNET_NOTOP_FILES = {
    "b0": ("efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d"),
    "b1": ("efficientnetb1_notop.h5", "74c4e6b3e1f6a1eea24c589628592432"),
    "b2": ("efficientnetb2_notop.h5", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    "b3": ("efficientnetb3_notop.h5", "af6d107764bb5b1abb91932881670226"),
    "b4": ("efficientnetb4_notop.h5", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    "b5": ("efficientnetb5_notop.h5", "38879255a25d3c92d5e44e04ae6cec6f"),
    "b6": ("efficientnetb6_notop.h5", "9ecce42647a20130c1f39a5d4cb75743"),
    "b7": ("efficientnetb7_notop.h5", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
}
# ImageNet's RGB standard deviation, as Keras' EfficientNet uses it.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
CACHE_SUBDIR = "models"


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither in Keras' cache nor downloadable."""


def keras_cache_dir():
    """The folder Keras caches `keras.applications`' weights in:
    `$KERAS_HOME/models` (default `~/.keras/models`), or `/tmp/.keras/models`
    when that home is not writable (Keras' own fallback)."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    if os.path.exists(home) and not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, CACHE_SUBDIR)


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_weights_file(model_name, file_name, file_hash, origin=KERAS_APPLICATIONS_ORIGIN):
    """The local path of a Keras weight file: from Keras' cache, downloaded
    there first if absent (`keras.utils.get_file`, MD5-checked).

    Args:
        model_name: the model the file is for (for messages).
        file_name: the file's name in the cache and at `origin`.
        file_hash: its MD5.
        origin: the URL folder it is downloaded from.

    Returns:
        The path of the checked file.

    Raises:
        WeightsUnavailableError: a cached file of that name that is not the
            expected one (left as it is), or a failed download; the message
            names the model, the URL, the cache path and the local-file
            alternative.
    """
    url = origin + file_name
    cache_dir = keras_cache_dir()
    path = os.path.join(cache_dir, file_name)
    advice = (
        f"Download {url} on a machine with network access and place it at {path} "
        f"(Keras' cache: $KERAS_HOME/{CACHE_SUBDIR}, default ~/.keras/{CACHE_SUBDIR}), or give a local weights "
        "file of this model instead: `--teacher-weights PATH` (a .weights.h5 or .keras file; in Python "
        "`weights=PATH`)."
    )
    if os.path.exists(path) and file_md5(path) != file_hash:
        # Checked here: `get_file` would download again and delete the file if that fails.
        raise WeightsUnavailableError(
            f"ImageNet weights of {model_name!r}: the cached file {path} is not the expected one "
            f"(MD5 {file_hash}; incomplete or another file). Remove it to download it again, or replace it. {advice}"
        )
    try:
        os.makedirs(cache_dir, exist_ok=True)  # get_file falls back to /tmp/.keras for a missing home
        return keras.utils.get_file(
            file_name, url, cache_subdir=CACHE_SUBDIR, file_hash=file_hash, cache_dir=os.path.dirname(cache_dir)
        )
    except Exception as error:  # get_file raises a bare Exception on network failures
        raise WeightsUnavailableError(
            f"ImageNet weights of {model_name!r} are not in Keras' cache ({path}) and could not be "
            f"downloaded from {url} ({error}). {advice}"
        ) from error


def load_efficientnet_imagenet_weights(model, variant, top_layer="top_activation"):
    """Loads `keras.applications`' ImageNet weights (the `include_top=False`
    file) into the Keras Applications part of a functional EfficientNet.

    The file is Keras' legacy `.h5`, read into the graph from the model's
    input to `top_layer` in layer order (names play no part: Keras auto-names
    some layers, e.g. "normalization_3"). Keras' `weights="imagenet"` graph
    has one more layer than `weights=None`'s: `Rescaling(1 /
    sqrt(IMAGENET_STDDEV_RGB))` after its `Normalization`, whose stored
    variance is the standard deviation (tensorflow/tensorflow#49930). Its
    effect is folded into the Normalization (variance x stddev), so the model
    computes what Keras' `weights="imagenet"` model does: `(x / 255 - mean) /
    stddev` for `[0, 255]` inputs.

    Args:
        model: a functional model holding the EfficientNet graph.
        variant: `"b0"` ... `"b7"`.
        top_layer: the last layer of the Keras Applications graph.

    Returns:
        `model`.
    """
    file_name, file_hash = EFFICIENTNET_NOTOP_FILES[variant]
    path = cached_weights_file(f"efficientnet_{variant}", file_name, file_hash)
    application = keras.Model(model.inputs, model.get_layer(top_layer).output)
    application.load_weights(path)
    (normalization,) = [layer for layer in application.layers if isinstance(layer, keras.layers.Normalization)]
    (variance,) = [v for v in normalization.non_trainable_variables if v.path.endswith("variance")]
    variance.assign(keras.ops.convert_to_numpy(variance) * np.asarray(IMAGENET_STDDEV_RGB, "float32"))
    normalization.finalize_state()  # its call reads a copy of the variable
    return model
