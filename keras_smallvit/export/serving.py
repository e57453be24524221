"""The serving export: raw uint8 images in, float32 class probabilities out.

How each backend gets there:
- TensorFlow: traced in process through Keras's `ExportArchive`.
- JAX: the same; `ExportArchive` converts the model with jax2tf.
- PyTorch (Keras's own SavedModel export needs torch_xla there), and ONNX on
  JAX (tf2onnx cannot convert jax2tf's `XlaCallModule` op): the model is
  saved to a backend-neutral `.keras` file that a subprocess re-opens under
  the TensorFlow backend (`python -m keras_smallvit.export`).
ONNX is the TensorFlow serving function converted by tf2onnx (the `onnx`
extra).
"""

import ctypes
import json
import numbers
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import keras
import numpy as np

from keras_smallvit.utils.files import check_replaceable
from keras_smallvit.utils.files import make_partial_dir
from keras_smallvit.utils.files import remove_path
from keras_smallvit.utils.files import replace_atomically
from keras_smallvit.utils.layers import all_sublayers
from keras_smallvit.images import RESIZE_POLICIES
from keras_smallvit.images import normalize
from keras_smallvit.models.usage import DEFAULT_PREPROCESSING
from keras_smallvit.models.usage import check_channel_values
from keras_smallvit.models.usage import check_class_names
from keras_smallvit.models.usage import check_preprocessing
from keras_smallvit.utils.validation import check_choice

FORMATS = ("saved_model", "onnx")
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
# The export's own description, for servers and people: in a SavedModel
# `assets.extra/serving_config.json`, in ONNX the metadata key `serving_config`.
CONFIG_NAME = "serving_config"
ONNX_EXTRA = "pip install 'keras_smallvit[onnx]' (tf2onnx and onnxruntime)"
# The subprocess export's model file lives in `<tmp>/<prefix><parent pid>_*`:
# the next export removes those whose process is gone (killed with -9).
TEMPORARY_PREFIX = "keras_smallvit_export_"
# The subprocess exits when the process of this pid is no longer its parent.
PARENT_PID_VARIABLE = "KERAS_SMALLVIT_EXPORT_PARENT_PID"


def export_for_serving(
    model, path, format="saved_model", *, scale=None, mean=None, std=None, resize=None, class_names=None, top_k=5,
    overwrite=False,
):
    """Exports a classifier for serving, whatever the current Keras backend.

    The exported function takes raw `uint8` images `(batch, H, W, C)` of any
    height and width (any batch size), brings them to the model's input the
    way training did (`resize` to the model's size, then
    `(x * scale - mean) / std`, inside the graph) and returns float32 class
    `probabilities` `(batch, num_classes)` with the `top_k` classes:
    `top_k_classes` (their names, strings), `top_k_indices` (int32) and
    `top_k_probabilities`, best first. Mixed-precision models compute as
    trained and return float32 probabilities.

    The preprocessing and class names are the model's own (`model.preprocessing`
    and `model.class_names`, which a training run saves with the model).
    A model without preprocessing (built fresh, or saved by an older version)
    needs it given: `scale`, `mean`, `std` (any of them replaces the model's
    normalisation, the others at their defaults); `resize` replaces the
    model's resize policy alone. Without class names, the classes are named
    by their index.

    SavedModel: signatures `serving_default` and `serve` (input `images`,
    outputs above; a wrong dtype, rank or channel count is rejected with the
    expected dtype and shape in the message), `logits` (same input, output
    `logits`) and `model_logits` (the model alone: float32 inputs at its
    size, already preprocessed). Load it with TensorFlow alone: `loaded =
    tf.saved_model.load(path)` (keep it: it owns the variables), then
    `loaded.signatures["serving_default"](images=x)["probabilities"]`.
    ONNX: one input `images` (batch, height and width dynamic), the same
    outputs, for ONNX Runtime. Both carry `serving_config` (input, outputs,
    preprocessing, class names, image size) as metadata.

    The export is written under a temporary name (`<name>.partial<ext>`) and
    renamed onto `path`: a failed export leaves a previous one at `path`
    untouched. It never replaces what it did not write: `path` must not
    exist, be an empty folder, or be a previous export (a folder with
    `assets.extra/serving_config.json`, or an ONNX file with the metadata
    `serving_config`); anything else raises `FileExistsError` before any
    work, unless `overwrite=True`.

    Args:
        model: a classifier returning logits `(batch, num_classes)`, e.g.
            `keras_smallvit.create_model(...)`; a model returning a dict
            with a `"logits"` key also works. On PyTorch, and for ONNX on
            JAX, it must load from a `.keras` file after `import
            keras_smallvit` (the export runs in a TensorFlow subprocess).
        path: the SavedModel directory, or the `.onnx` file.
        format: `"saved_model"` or `"onnx"`.
        scale: None (the model's preprocessing), or the factor the uint8
            pixels are multiplied by first (> 0).
        mean: None, or subtracted after scaling: one number or one per channel.
        std: None, or divides after the mean: one number or one per channel (> 0).
        resize: None (the model's, else `"squash"`), or the resize policy:
            `"squash"`, `"crop"` or `"pad"` (see
            `keras_smallvit.images.RESIZE_POLICIES`); the run's `resize`.
        class_names: None (the model's), or one name per class.
        top_k: how many classes the `top_k_*` outputs hold (at most
            `num_classes`).
        overwrite: whether to replace `path` even when it is not a previous
            export (e.g. a folder of other files). Default False.

    Returns:
        `path`.

    Raises:
        ValueError: an invalid argument (named), or a model whose
            preprocessing is unknown and not given.
    """
    check_choice("format", format, FORMATS)
    check_output(path, overwrite)  # before any model work
    config = serving_config(model, format, scale, mean, std, resize, class_names, top_k)
    _remove_stale_temporary_folders()

    def write(tmp_path):
        try:
            _write(model, tmp_path, format, config)
        except BaseException:
            remove_path(tmp_path)  # no half-written export left behind
            raise

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    replace_atomically(write, os.fspath(path), is_ours=is_export, overwrite=overwrite)
    return path


def check_output(path, overwrite=False):
    """Raises `FileExistsError` unless an export may be written at `path`
    (see `export_for_serving`)."""
    check_replaceable(os.fspath(path), is_ours=is_export, overwrite=overwrite)


def is_export(path):
    """Whether `path` is an export of `export_for_serving` (one it may replace).

    A SavedModel folder is recognised by `saved_model.pb` and its
    `assets.extra/serving_config.json`; an ONNX file (one file, no room for a
    marker beside it that could not be separated from it) by its metadata
    key `serving_config`, both holding this library's config.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        config_file = os.path.join(path, "assets.extra", CONFIG_NAME + ".json")
        if not os.path.isfile(os.path.join(path, "saved_model.pb")) or not os.path.isfile(config_file):
            return False
        try:
            with open(config_file) as f:
                return _is_serving_config(json.load(f))
        except (OSError, ValueError):
            return False
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            if f.read(1) != b"\x08":  # an ONNX ModelProto starts with its ir_version field
                return False
        import onnx

        model_proto = onnx.load(path, load_external_data=False)
        props = {p.key: p.value for p in model_proto.metadata_props}
        return _is_serving_config(json.loads(props[CONFIG_NAME]))
    except Exception:  # not ONNX, not ours, or onnx missing: not replaced without `overwrite`
        return False


def _is_serving_config(config):
    return isinstance(config, dict) and config.get("format") in FORMATS and {"inputs", "outputs"} <= set(config)


def serving_config(model, format, scale=None, mean=None, std=None, resize=None, class_names=None, top_k=5):
    """The export's description (`serving_config`), after checking the arguments."""
    image_shape = _image_shape(model)
    num_classes = _num_classes(model, image_shape)
    if resize is not None:
        check_choice("resize", resize, RESIZE_POLICIES)
    model_preprocessing = getattr(model, "preprocessing", None)
    if model_preprocessing is not None:
        model_preprocessing = check_preprocessing(dict(model_preprocessing), image_shape[-1])
    if any(v is not None for v in (scale, mean, std)):
        preprocessing = _preprocessing(1 / 255 if scale is None else scale, mean, std, image_shape[-1])
        preprocessing["resize"] = (model_preprocessing or DEFAULT_PREPROCESSING)["resize"]
    else:
        preprocessing = model_preprocessing
        if preprocessing is None:
            raise ValueError(
                "Invalid `model`: its preprocessing is unknown (a model built fresh, or saved by an older version "
                "of this library). Give `scale`, `mean` and `std` (e.g. scale=1/255 and the run's "
                "normalization_mean/normalization_std from its config.json), or set `model.preprocessing`."
            )
    if resize is not None:
        preprocessing["resize"] = resize
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    if names is None:
        names = [str(i) for i in range(num_classes)]
    names = list(check_class_names(names, num_classes))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"Invalid `top_k`: {top_k!r}. Expected an integer >= 1.")
    top_k = min(top_k, num_classes)
    if format == "onnx":
        _require_onnx_converter()
    return {
        "format": format,
        "inputs": {INPUT_NAME: {"dtype": "uint8", "shape": [None, None, None, image_shape[-1]]}},
        "outputs": {
            OUTPUT_NAME: {"dtype": "float32", "shape": [None, num_classes]},
            "top_k_classes": {"dtype": "string", "shape": [None, top_k]},
            "top_k_indices": {"dtype": "int32", "shape": [None, top_k]},
            "top_k_probabilities": {"dtype": "float32", "shape": [None, top_k]},
        },
        "image_size": list(image_shape[:2]),
        "preprocessing": dict(preprocessing),
        "class_names": names,
        "top_k": top_k,
    }


def _write(model, path, format, config):
    """Writes the export at `path` (a new name: no check, no rename)."""
    backend = keras.backend.backend()
    if format == "saved_model":
        make_partial_dir(path)  # marked first: a killed export's leftover is recognised as ours
    if backend == "tensorflow" or (backend == "jax" and format == "saved_model"):
        if format == "saved_model":
            archive, _ = _serving_archive(model, config)
            _write_saved_model(archive, path, config)
        else:
            _, serve = _serving_archive(_float32_copy(model), config, as_matmuls=True)
            _write_onnx(serve, path, config)
    else:
        _export_in_tensorflow_subprocess(model, path, format, config)


# --- checks ---------------------------------------------------------------------


def _image_shape(model):
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        shape = None
    if not isinstance(shape, tuple) or len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(
            f"Invalid `model`: its input shape is {shape}. Expected one image input "
            "(batch, height, width, channels) of static size, e.g. a model from `keras_smallvit.create_model`."
        )
    return tuple(int(d) for d in shape[1:])


def _logits(outputs):
    """The logits among a model's outputs (a tensor, or a dict's "logits")."""
    if isinstance(outputs, dict):
        if "logits" not in outputs:
            raise ValueError(
                f"Invalid `model`: it returns a dict with keys {sorted(outputs)} and no 'logits'. Export a "
                "classifier (e.g. `keras_smallvit.create_model(...)`), not a backbone."
            )
        return outputs["logits"]
    if isinstance(outputs, (list, tuple)):
        raise ValueError(
            f"Invalid `model`: it returns {len(outputs)} outputs. Expected the logits (batch, num_classes) "
            "or a dict with a 'logits' key."
        )
    return outputs


def _num_classes(model, image_shape):
    spec = _logits(model.compute_output_spec(keras.KerasTensor((1, *image_shape), dtype="float32")))
    if len(spec.shape) != 2 or spec.shape[-1] is None:
        raise ValueError(
            f"Invalid `model`: its logits have shape {spec.shape}. Expected (batch, num_classes): export a classifier."
        )
    return int(spec.shape[-1])


def _preprocessing(scale, mean, std, channels):
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"Invalid `scale`: {scale!r}. Expected a number > 0 (1/255 for the training pipeline).")
    return {
        "scale": float(scale),
        "mean": check_channel_values("`mean`", mean, channels, positive=False),
        "std": check_channel_values("`std`", std, channels, positive=True),
    }


def _require_onnx_converter():
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import onnx  # noqa: F401
            import tf2onnx  # noqa: F401
        else:  # converted in the TensorFlow subprocess: only check it could be
            import importlib.util

            if importlib.util.find_spec("tf2onnx") is None:
                raise ImportError("tf2onnx")
    except ImportError as error:
        raise ImportError(f"`format='onnx'` needs tf2onnx: {ONNX_EXTRA}. ({error})") from None


# --- in process (TensorFlow, JAX) -------------------------------------------------


def _serving_archive(model, config, as_matmuls=False):
    """An `ExportArchive` with endpoints `model_logits`, `logits`,
    `serving_default` and `serve`, and the `serve` tf.function (uint8 images
    of any size -> {"probabilities", "top_k_*"}). `as_matmuls`: the resize in
    ops ONNX has."""
    import tensorflow as tf

    from keras_smallvit.images import resize_uint8_images

    (name, spec), = config["inputs"].items()
    channels = spec["shape"][-1]
    height, width = config["image_size"]
    preprocessing = config["preprocessing"]
    signature = [tf.TensorSpec([None, None, None, channels], tf.uint8, name=name)]
    model_input = [None, height, width, channels]

    def model_logits(inputs):
        if keras.backend.backend() == "tensorflow":  # (jax2tf's own check rejects other shapes on JAX)
            inputs = tf.ensure_shape(inputs, model_input)
        outputs = model(inputs, training=False)
        return {"logits": keras.ops.cast(_logits(outputs), "float32")}

    archive = keras.export.ExportArchive()
    archive.track(model)
    model_endpoint = archive.add_endpoint(
        "model_logits", model_logits, input_signature=[tf.TensorSpec(model_input, tf.float32, name="inputs")]
    )

    # TensorFlow ops around the (possibly jax2tf) model function. A
    # signature call does not check shapes; `ensure_shape` does, with a
    # message that names the expected shape.
    def prepare(images):
        images = tf.ensure_shape(images, [None, None, None, channels], name=f"check_{name}")
        resized = resize_uint8_images(images, (height, width), preprocessing["resize"], as_matmuls=as_matmuls)
        return normalize(tf.ensure_shape(resized, model_input), preprocessing)

    @tf.function(input_signature=signature)
    def logits(images):
        return model_endpoint(prepare(images))

    @tf.function(input_signature=signature)
    def serve(images):
        class_names = tf.constant(config["class_names"])  # made inside: a captured one is an ONNX input
        probabilities = tf.nn.softmax(model_endpoint(prepare(images))["logits"], axis=-1)
        top_probabilities, top_indices = tf.math.top_k(probabilities, config["top_k"])
        return {
            OUTPUT_NAME: probabilities,
            "top_k_classes": tf.gather(class_names, top_indices),
            "top_k_indices": top_indices,
            "top_k_probabilities": top_probabilities,
        }

    for function in (logits, serve):
        function.get_concrete_function()  # traced: `add_endpoint` takes it as is
    archive.add_endpoint("logits", logits)
    # The first endpoint would become `serving_default`: name it explicitly.
    archive.add_endpoint("serving_default", serve)
    archive.add_endpoint("serve", serve)
    return archive, serve


def _write_saved_model(archive, path, config):
    archive.write_out(path, verbose=False)
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, CONFIG_NAME + ".json"), "w") as f:
        json.dump(config, f, indent=2)


REDUCED_PRECISION = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


def _float32_copy(model):
    """`model`, or a copy of it that computes in float32 if any layer does not.

    For ONNX: ONNX Runtime has no bfloat16 convolution or matmul on CPU. The
    weights are the same (mixed precision keeps float32 variables).
    """

    def to_float32(item):
        if isinstance(item, dict):
            if item.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                name = item.get("config", {}).get("name")
                if name in REDUCED_PRECISION:
                    return {**item, "config": {**item["config"], "name": "float32"}}
            return {key: to_float32(value) for key, value in item.items()}
        if isinstance(item, (list, tuple)):
            return type(item)(to_float32(value) for value in item)
        return "float32" if isinstance(item, str) and item in REDUCED_PRECISION else item

    def compute_dtypes(m):
        return {layer.compute_dtype for layer in all_sublayers(m)}

    if compute_dtypes(model) == {"float32"}:
        return model
    copy = keras.saving.deserialize_keras_object(to_float32(keras.saving.serialize_keras_object(model)))
    if compute_dtypes(copy) != {"float32"}:
        raise ValueError(
            f"Invalid `model` for ONNX: it computes in {sorted(compute_dtypes(model))} and its config does not "
            "rebuild in float32. Export a float32 model (ONNX Runtime lacks reduced-precision CPU kernels)."
        )
    copy.set_weights(model.get_weights())
    return copy


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler: ONNX has `Erf` but no `Erfc`, which TensorFlow's
    exact GELU uses: erfc(x) = 1 - erf(x)."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    minus = ctx.insert_new_node_on_output(
        "Sub", node.output[0], name=utils.make_name(f"{name}_one_minus"), inputs=[one.output[0], node.output[0]]
    )
    ctx.copy_shape(node.output[0], minus.output[0])


def _write_onnx(serve, path, config):
    import onnx
    import tensorflow as tf
    import tf2onnx

    (name, spec), = config["inputs"].items()
    model_proto, _ = tf2onnx.convert.from_function(
        serve,
        input_signature=[tf.TensorSpec(spec["shape"], tf.uint8, name=name)],
        custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
    )
    graph = model_proto.graph
    missing = set(config["outputs"]) - {o.name for o in graph.output}
    if missing:  # tf2onnx names the outputs after the returned dict's keys
        raise RuntimeError(f"The ONNX conversion lost the outputs {sorted(missing)}.")
    for value in graph.input:  # tf2onnx calls the dynamic dimensions "unk__<n>"
        for dim, label in zip(value.type.tensor_type.shape.dim, ("batch", "height", "width")):
            dim.dim_param = label
    for value in graph.output:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.helper.set_model_props(model_proto, {CONFIG_NAME: json.dumps(config)})
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, path)


# --- through a TensorFlow subprocess (PyTorch; ONNX on JAX) ----------------------


def _export_in_tensorflow_subprocess(model, path, format, config):
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # Removed on every exit but kill -9 (then by the next export, see `_remove_stale_temporary_folders`).
    with tempfile.TemporaryDirectory(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}_") as tmp:
        model_file = os.path.join(tmp, "model.keras")
        model.save(model_file)
        config_file = os.path.join(tmp, CONFIG_NAME + ".json")
        with open(config_file, "w") as f:
            json.dump(config, f)
        # `--in-place`: `path` is this export's own temporary name, already
        # checked; the config (preprocessing, class names) is already resolved.
        command = [
            sys.executable, "-m", "keras_smallvit.export", model_file, os.path.abspath(path), "--format", format,
            "--in-place", f"--serving-config={config_file}",
        ]
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env[PARENT_PID_VARIABLE] = str(os.getpid())
        # This checkout importable even when the package is not installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        # `run` kills the child on any exception here (Ctrl-C included);
        # `_die_with_parent` covers a parent killed outright.
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, preexec_fn=_die_with_parent_function()
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"The {format} export under the TensorFlow backend failed (`{' '.join(command[1:4])} ...`, "
            f"exit code {result.returncode}):\n{result.stderr[-3000:]}"
        )


PR_SET_PDEATHSIG = 1


def _die_with_parent_function():
    """A `preexec_fn` that has Linux send SIGKILL to the child when this
    process dies, or None elsewhere (the child's `watch_parent` covers it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None

    def die_with_parent():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return die_with_parent


def watch_parent(interval=0.5):
    """In the export subprocess: exits as soon as the process that started it
    (`KERAS_SMALLVIT_EXPORT_PARENT_PID`) is gone, without Linux's death signal
    (other OSes), or when it died before the signal was set up."""
    import threading
    import time

    expected = os.environ.get(PARENT_PID_VARIABLE)
    if not expected:
        return

    def watch():
        while True:
            if os.getppid() != int(expected):
                os._exit(1)
            time.sleep(interval)

    if os.getppid() != int(expected):
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _remove_stale_temporary_folders():
    """Removes the subprocess exports' temporary folders whose process is
    gone (a parent killed with -9 runs no cleanup)."""
    if os.name != "posix":  # os.kill(pid, 0) is a liveness check on POSIX only
        return
    root = tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        pid = name[len(TEMPORARY_PREFIX):].split("_")[0]
        if not name.startswith(TEMPORARY_PREFIX) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except OSError:  # someone else's process
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
