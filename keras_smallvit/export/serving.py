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


def export_for_serving(model, path, format="saved_model", *, scale=1 / 255, mean=None, std=None, overwrite=False):
    """Exports a classifier for serving, whatever the current Keras backend.

    The exported function takes raw `uint8` images `(batch, H, W, C)` of the
    model's input size (any batch size) and returns float32 class
    probabilities `(batch, num_classes)`: `softmax(model(preprocess(images)))`
    with `preprocess(x) = (x * scale - mean) / std` inside the graph. The
    defaults (`x / 255`) are the training pipeline's. Mixed-precision models
    compute as trained and return float32 probabilities.

    SavedModel: signatures `serving_default` and `serve` (input `images`,
    output `probabilities`; wrong dtype, rank or size is rejected with the
    expected shape and dtype in the message) and `logits` (same input,
    output `logits`). Load it with TensorFlow alone: `loaded =
    tf.saved_model.load(path)` (keep it: it owns the variables), then
    `loaded.signatures["serving_default"](images=x)["probabilities"]`.
    ONNX: one input `images`, one output `probabilities`, for ONNX Runtime.
    Both carry `serving_config` (input, output, preprocessing) as metadata.

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
        scale: the uint8 pixels are multiplied by this first (> 0).
        mean: None, or subtracted after scaling: one number or one per channel.
        std: None, or divides after the mean: one number or one per channel (> 0).
        overwrite: whether to replace `path` even when it is not a previous
            export (e.g. a folder of other files). Default False.

    Returns:
        `path`.
    """
    check_choice("format", format, FORMATS)
    check_output(path, overwrite)  # before any model work
    config = serving_config(model, format, scale, mean, std)
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


def serving_config(model, format, scale=1 / 255, mean=None, std=None):
    """The export's description (`serving_config`), after checking the arguments."""
    image_shape = _image_shape(model)
    num_classes = _num_classes(model, image_shape)
    preprocessing = _preprocessing(scale, mean, std, image_shape[-1])
    if format == "onnx":
        _require_onnx_converter()
    return {
        "format": format,
        "inputs": {INPUT_NAME: {"dtype": "uint8", "shape": [None, *image_shape]}},
        "outputs": {OUTPUT_NAME: {"dtype": "float32", "shape": [None, num_classes]}},
        "preprocessing": preprocessing,
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
            _, serve = _serving_archive(_float32_copy(model), config)
            _write_onnx(serve, path, config)
    else:
        _export_in_tensorflow_subprocess(model, path, format, config["preprocessing"])


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


def _channel_values(name, value, channels, positive):
    if value is None:
        return None
    try:
        values = [float(v) for v in np.ravel(np.asarray(value, dtype="float64"))]
    except (TypeError, ValueError):
        values = []
    valid = len(values) in (1, channels) and all(np.isfinite(v) and (v > 0 or not positive) for v in values)
    if isinstance(value, (bool, str)) or not valid:
        raise ValueError(
            f"Invalid `{name}`: {value!r}. Expected None, a number or {channels} numbers (one per channel)"
            + (", all > 0." if positive else ".")
        )
    return [float(v) for v in values] if len(values) > 1 else float(values[0])


def _preprocessing(scale, mean, std, channels):
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"Invalid `scale`: {scale!r}. Expected a number > 0 (1/255 for the training pipeline).")
    return {
        "scale": float(scale),
        "mean": _channel_values("mean", mean, channels, positive=False),
        "std": _channel_values("std", std, channels, positive=True),
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


def _preprocess(images, preprocessing):
    x = keras.ops.cast(images, "float32") * preprocessing["scale"]
    if preprocessing["mean"] is not None:
        x = x - np.asarray(preprocessing["mean"], dtype="float32")
    if preprocessing["std"] is not None:
        x = x / np.asarray(preprocessing["std"], dtype="float32")
    return x


def _serving_archive(model, config):
    """An `ExportArchive` with endpoints `logits`, `serving_default` and
    `serve`, and the `serve` tf.function (uint8 images -> {"probabilities"})."""
    import tensorflow as tf

    (name, spec), = config["inputs"].items()
    shape = spec["shape"]
    signature = [tf.TensorSpec(shape, tf.uint8, name=name)]
    preprocessing = config["preprocessing"]

    def logits(images):
        if keras.backend.backend() == "tensorflow":  # (jax2tf's own check rejects other shapes on JAX)
            images = tf.ensure_shape(images, shape)
        outputs = model(_preprocess(images, preprocessing), training=False)
        return {"logits": keras.ops.cast(_logits(outputs), "float32")}

    archive = keras.export.ExportArchive()
    archive.track(model)
    logits_endpoint = archive.add_endpoint("logits", logits, input_signature=signature)

    # TensorFlow ops around the (possibly jax2tf) model function. A
    # signature call does not check shapes; `ensure_shape` does, with a
    # message that names the expected shape.
    @tf.function(input_signature=signature)
    def serve(images):
        images = tf.ensure_shape(images, shape, name=f"check_{name}")
        return {OUTPUT_NAME: tf.nn.softmax(logits_endpoint(images)["logits"], axis=-1)}

    serve.get_concrete_function()  # traced: `add_endpoint` takes it as is
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
    if [o.name for o in graph.output] != [OUTPUT_NAME]:  # tf2onnx names it after the graph tensor
        (old,) = [o.name for o in graph.output]
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        graph.output[0].name = OUTPUT_NAME
    for value in (graph.input[0], graph.output[0]):  # tf2onnx calls the batch dimension "unk__<n>"
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.helper.set_model_props(model_proto, {CONFIG_NAME: json.dumps(config)})
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, path)


# --- through a TensorFlow subprocess (PyTorch; ONNX on JAX) ----------------------


def _export_in_tensorflow_subprocess(model, path, format, preprocessing):
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # Removed on every exit but kill -9 (then by the next export, see `_remove_stale_temporary_folders`).
    with tempfile.TemporaryDirectory(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}_") as tmp:
        model_file = os.path.join(tmp, "model.keras")
        model.save(model_file)
        # `--in-place`: `path` is this export's own temporary name, already checked.
        command = [
            sys.executable, "-m", "keras_smallvit.export", model_file, os.path.abspath(path), "--format", format,
            "--in-place",
        ]
        # `--key=value`: argparse would take a value such as "-0.5,0.1" for an option.
        command.append(f"--scale={float(preprocessing['scale'])!r}")
        for key in ("mean", "std"):
            if preprocessing[key] is not None:
                command.append(f"--{key}=" + ",".join(repr(float(v)) for v in np.ravel(preprocessing[key])))
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
