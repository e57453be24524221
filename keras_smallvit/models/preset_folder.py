"""Preset folders (keras-hub style): a trained classifier with its config,
weights and serving preprocessing, to share and reload.

A preset folder, written by `ImageClassifier.save_to_preset(path)`:
- `metadata.json`: `{"format": "keras_smallvit_preset", ...}` (what marks
  the folder as the library's own);
- `config.json`: the model's Keras serialization (class and config);
- `model.weights.h5`: its weights;
- `preprocessing.json`: the serving preprocessing `{"scale", "mean",
  "std", "resize"}`: `(x * scale - mean) / std` on raw pixels resized to the
  model's size, as `keras_smallvit.export_for_serving` takes it (the model's
  config carries it too, with its class names).

`ImageClassifier.from_preset(name_or_path)` also reads a finished run folder
of `training.train` (its `config.json` and `best.keras`, else `last.keras`).
"""

import json
import os

import keras

from keras_smallvit.models.registry import create_model
from keras_smallvit.models.registry import list_models
from keras_smallvit.models.usage import DEFAULT_PREPROCESSING
from keras_smallvit.models.usage import check_preprocessing
from keras_smallvit.utils.files import make_partial_dir
from keras_smallvit.utils.files import replace_atomically
from keras_smallvit.utils.registration import register_all

PRESET_FORMAT = "keras_smallvit_preset"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
PREPROCESSING_FILE = "preprocessing.json"
RUN_MODELS = ("best.keras", "last.keras")


class DamagedFileError(ValueError):
    """A file of a preset or run folder that does not read (named in the message)."""


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as error:  # JSON's message names no file
        raise DamagedFileError(f"{path} is not valid JSON ({error}): the file is damaged.") from None


def _load_run_model(path):
    """The first of `RUN_MODELS` in the run folder `path` that loads; a
    damaged one is passed over with a one-line warning. Raises
    `DamagedFileError` naming every file when none loads."""
    import warnings

    problems = []
    for name in RUN_MODELS:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        try:
            model = keras.saving.load_model(file)
        except Exception as error:  # Keras/zip/h5py errors name no file
            problems.append(f"{file}: {type(error).__name__}: {str(error)[:200]}")
            continue
        for problem in problems:
            warnings.warn(f"Skipped a damaged checkpoint, loaded {file} instead ({problem})", stacklevel=3)
        return model
    raise DamagedFileError("No model of the run folder loads:\n  " + "\n  ".join(problems))


def is_preset_folder(path):
    """Whether `path` is a preset folder written by `save_preset`."""
    metadata = os.path.join(path, METADATA_FILE)
    if not (os.path.isdir(path) and os.path.isfile(metadata)):
        return False
    try:
        return _read_json(metadata).get("format") == PRESET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def is_run_folder(path):
    """Whether `path` is a run folder of `training.train` with a saved model."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and any(
        os.path.isfile(os.path.join(path, name)) for name in RUN_MODELS
    )


def save_preset(model, path, preprocessing=None):
    """Writes `model` as a preset folder at `path` (see the module docstring).

    Written under a temporary name and renamed into place. `path` may be
    missing, an empty folder or a previous preset folder; anything else
    (a folder of other files, a run folder, a file) raises
    `FileExistsError` naming it, and nothing is written.

    Args:
        model: the classifier.
        path: the folder.
        preprocessing: its serving preprocessing (see `check_preprocessing`);
            None: the model's `preprocessing` attribute if it was loaded from
            a preset, else `x / 255`.

    Returns:
        `path`.
    """
    if preprocessing is None:
        preprocessing = getattr(model, "preprocessing", None)
    preprocessing = check_preprocessing(preprocessing, model.input_shape[-1])
    path = os.fspath(path)

    def write(tmp_path):
        make_partial_dir(tmp_path)
        model.save_weights(os.path.join(tmp_path, WEIGHTS_FILE))
        files = {
            CONFIG_FILE: keras.saving.serialize_keras_object(model),
            PREPROCESSING_FILE: preprocessing,
            METADATA_FILE: {
                "format": PRESET_FORMAT,
                "class_name": type(model).__name__,
                "keras_version": keras.__version__,
            },
        }
        for name, content in files.items():
            with open(os.path.join(tmp_path, name), "w") as f:
                json.dump(content, f, indent=2)

    replace_atomically(write, path, is_ours=is_preset_folder)
    return path


def run_preprocessing(train_config):
    """The serving preprocessing of a run, from its `config.json` (as
    `training.train`'s export puts in the graph). A config without
    `resize` (an older run) resized by "squash"."""
    preprocessing = {"resize": train_config.get("resize", DEFAULT_PREPROCESSING["resize"])}
    if train_config.get("normalize"):
        preprocessing.update(mean=train_config.get("normalization_mean"), std=train_config.get("normalization_std"))
    return check_preprocessing(preprocessing)


def load_preset(name_or_path, **kwargs):
    """The classifier of a registry name (fresh weights), a preset folder or
    a finished run folder; see `ImageClassifier.from_preset`."""
    register_all()  # the presets, and the classes a saved model names
    if isinstance(name_or_path, str) and name_or_path in list_models():
        missing = [k for k in ("num_classes", "image_size") if k not in kwargs]
        if missing:
            raise ValueError(
                f"Invalid `from_preset({name_or_path!r})`: a registry name builds a fresh model and needs "
                f"`{missing[0]}` (give num_classes=..., image_size=...)."
            )
        return create_model(name_or_path, **kwargs)
    path = os.fspath(name_or_path)
    if kwargs:
        raise ValueError(
            f"Invalid arguments {sorted(kwargs)} for the preset folder {path!r}: a saved model takes none "
            "(they are for registry names)."
        )
    if is_preset_folder(path):
        model = keras.saving.deserialize_keras_object(_read_json(os.path.join(path, CONFIG_FILE)))
        weights_file = os.path.join(path, WEIGHTS_FILE)
        try:
            model.load_weights(weights_file)
        except Exception as error:  # h5py's message names no file
            raise DamagedFileError(
                f"{weights_file} does not load ({type(error).__name__}: {str(error)[:200]}): the file is damaged."
            ) from None
        preprocessing_file = os.path.join(path, PREPROCESSING_FILE)
        try:
            model.preprocessing = check_preprocessing(_read_json(preprocessing_file), model.input_shape[-1])
        except ValueError as error:
            raise ValueError(f"{preprocessing_file}: {error}") from None
        return model
    if is_run_folder(path):
        model = _load_run_model(path)
        if getattr(model, "preprocessing", None) is None:  # saved by an older version
            model.preprocessing = run_preprocessing(_read_json(os.path.join(path, CONFIG_FILE)))
        return model
    raise ValueError(
        f"Invalid `name_or_path`: {name_or_path!r}. Allowed values: a name of "
        "`keras_smallvit.list_models()`, a preset folder (written by `save_to_preset`), or a finished "
        f"run folder of `training.train` (with {CONFIG_FILE} and {' or '.join(RUN_MODELS)})."
    )


def load_classifier(path):
    """`(model, note)`: the classifier of a `.keras` file, a run folder or a
    preset folder, with its preprocessing. A `.keras` file saved by an older
    version has none: the `config.json` of its run, beside it, supplies it
    (`note` says so; else `note` is None and so is `model.preprocessing`)."""
    if os.path.isdir(path):
        return load_preset(path), None
    register_all()  # the classes the file names
    # compile=False: predicting and serving need no loss, metrics or optimizer.
    model = keras.saving.load_model(path, compile=False)
    run_config = os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_FILE)
    if getattr(model, "preprocessing", "n/a") is None and os.path.isfile(run_config):
        config = _read_json(run_config)
        if isinstance(config, dict) and "normalize" in config and "dataset" in config:
            model.preprocessing = run_preprocessing(config)
            return model, f"{path} carries no preprocessing (saved by an older version): using {run_config}."
    return model, None
