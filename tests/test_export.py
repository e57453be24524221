"""`export_for_serving`: each export is loaded the way a server would, in a
fresh process that imports TensorFlow / ONNX Runtime and not keras_smallvit,
and must give the Keras model's probabilities on raw uint8 images.

Kept fast: one test exports the models once and one server process checks
every export (each process importing TensorFlow costs seconds).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.export import serving
from tests import references
from tests.backend_utils import tree_contents
from tests.contract import BACKEND

IMAGE_SIZE = 16
NUM_CLASSES = 5
TINY_VIT = dict(depth=2, hidden_dim=32, num_heads=2, head_dim=8)
# Two conv kernel shapes: on JAX each new shape compiles its initializer (~1.5 s each).
TINY_RESNET = dict(stage_blocks=(1, 1, 1), stage_widths=(4, 4, 4), stem_width=4)
BATCH_SIZES = (1, 4)
# The CNN's exports normalise after x / 255 and pad to the model's aspect ratio
# (given to the export, passed on to the torch subprocess); the ViT carries its
# preprocessing (a centre crop) and class names itself.
CNN_PREPROCESSING = {"mean": [0.5, 0.4, 0.3], "std": 0.25, "resize": "pad"}
VIT_PREPROCESSING = {"mean": 0.5, "std": [0.2, 0.25, 0.3], "resize": "crop"}
VIT_CLASS_NAMES = ["cat", "dog", "ship", "car", "tree"]
TOP_K = 3
# Served at its own size and at two others (resized inside the graph): taller
# and narrower (downsampled), wider (the height upsampled).
OTHER_SIZES = ((41, 23), (7, 16))
# name -> (model, format); "cnn" is mixed_bfloat16 (its ONNX export computes in float32).
# Every backend exports both models through its own SavedModel path. ONNX is
# always converted under TensorFlow: in process on TensorFlow (both models),
# on JAX and torch by the same TensorFlow subprocess call (covered on JAX;
# each subprocess costs ~10 s of CPU here, mostly importing TensorFlow).
EXPORTS = {
    "vit_saved_model": ("vit", "saved_model"),
    "cnn_saved_model": ("cnn", "saved_model"),
}
if BACKEND in ("tensorflow", "jax"):
    EXPORTS["vit_onnx"] = ("vit", "onnx")
if BACKEND == "tensorflow":
    EXPORTS["cnn_onnx"] = ("cnn", "onnx")

SERVER = r'''
"""A server's view of the exports: TensorFlow and ONNX Runtime, no keras_smallvit."""
import json
import os
import sys

import numpy as np

sys.modules["keras_smallvit"] = None  # importing it fails: the exports must stand alone
import onnxruntime
import tensorflow as tf

request = json.load(open(sys.argv[1]))
images = dict(np.load(request["images"]))
good = images["batch_1"]
bad_inputs = {
    "float32": good.astype("float32"),
    "one_channel": good[..., :1],
    "rank_3": good[0],
}


def error_of(run, x):
    try:
        run(x)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


results = {}
for name, export in request["exports"].items():
    path, out = export["path"], {}
    if export["format"] == "saved_model":
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures["serving_default"]
        out["signatures"] = sorted(loaded.signatures)
        (out["input_specs"],) = [
            {k: [v.shape.as_list(), v.dtype.name] for k, v in signature.structured_input_signature[1].items()}
        ]
        out["output_specs"] = {k: [v.shape.as_list(), v.dtype.name] for k, v in signature.structured_outputs.items()}
        run = lambda x: signature(images=tf.constant(x))["probabilities"].numpy()
        top = signature(images=tf.constant(good))
        out["top_k"] = [top["top_k_classes"].numpy().astype(str).tolist(), top["top_k_probabilities"].numpy().tolist()]
        logits = loaded.signatures["logits"](images=tf.constant(good))["logits"].numpy()
        out["logits"] = logits.tolist()
        out["serve"] = loaded.serve(tf.constant(good))["probabilities"].numpy().tolist()
        with open(os.path.join(path, "assets.extra", "serving_config.json")) as f:
            out["config"] = json.load(f)
    else:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        out["input_specs"] = {i.name: [i.shape, i.type] for i in session.get_inputs()}
        out["output_specs"] = {o.name: [o.shape, o.type] for o in session.get_outputs()}
        run = lambda x: session.run(["probabilities"], {"images": x})[0]
        classes, top_probabilities = session.run(["top_k_classes", "top_k_probabilities"], {"images": good})
        out["top_k"] = [np.asarray(classes).astype(str).tolist(), top_probabilities.tolist()]
        out["config"] = json.loads(session.get_modelmeta().custom_metadata_map["serving_config"])
    out["probabilities"] = {}
    for key, x in images.items():
        probabilities = run(x)
        out["probabilities"][key] = probabilities.tolist()
        out["dtype"] = str(probabilities.dtype)
    out["errors"] = {key: error_of(run, x) for key, x in bad_inputs.items()}
    results[name] = out
results["keras_smallvit_imported"] = sys.modules["keras_smallvit"] is not None
with open(sys.argv[2], "w") as f:
    json.dump(results, f)
'''


def perturb(model, seed):
    """Weights away from their initial values (a fit step costs an XLA compile
    on JAX); BatchNorm variances stay positive."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        if "seed_generator" in variable.path:
            continue
        value = keras.ops.convert_to_numpy(variable)
        noise = rng.normal(scale=0.1, size=value.shape).astype(value.dtype)
        variable.assign(value * np.exp(noise) if "variance" in variable.path else value + noise)


def probabilities_of(model, images, mean=0.0, std=1.0, resize="squash"):
    """softmax(model((resized images / 255 - mean) / std)), all batches in
    one `predict` call (one XLA compile on JAX, whose eager path compiles
    every op per shape). Images of other sizes are first resized by the
    NumPy/PIL reference of the `resize` policy (`tests.references`; its
    exact halves rounded as the pipeline rounds them)."""
    from keras_smallvit.images import resize_uint8_images

    size = (IMAGE_SIZE, IMAGE_SIZE)
    batches = [
        b if b.shape[1:3] == size else
        references.resize_uint8_images(b, size, resize, rounded=resize_uint8_images(b, size, resize))
        for b in images.values()
    ]
    x = (np.concatenate(batches).astype("float32") / 255.0 - np.float32(mean)) / np.float32(std)
    logits = model.predict(x.astype("float32"), batch_size=64, verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(keras.ops.cast(logits, "float32")))
    return dict(zip(images, np.split(probabilities, np.cumsum([len(b) for b in batches])[:-1])))


def export_and_serve(root):
    """Exports the models, then one server process answers for all exports.
    Returns the server's results and the Keras models' probabilities."""
    vit = keras_smallvit.create_model(
        "sl_sata_cb_vit", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, dtype="float32", **TINY_VIT
    )
    cnn = keras_smallvit.create_model(
        "resnet56", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, dtype="mixed_bfloat16", **TINY_RESNET
    )
    perturb(vit, 0)
    perturb(cnn, 1)
    models = {"vit": vit, "cnn": cnn}
    vit.preprocessing, vit.class_names = VIT_PREPROCESSING, VIT_CLASS_NAMES
    rng = np.random.default_rng(2)
    images = {f"batch_{n}": rng.integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8") for n in BATCH_SIZES}
    for height, width in OTHER_SIZES:
        images[f"size_{height}x{width}"] = rng.integers(0, 256, (2, height, width, 3), dtype="uint8")
    np.savez(root / "images.npz", **images)
    exports = {}
    for name, (model_name, format) in EXPORTS.items():
        path = str(root / (name + (".onnx" if format == "onnx" else "")))
        preprocessing = CNN_PREPROCESSING if model_name == "cnn" else {}
        assert keras_smallvit.export_for_serving(
            models[model_name], path, format=format, top_k=TOP_K, **preprocessing
        ) == path
        exports[name] = {"path": path, "format": format}
    with open(root / "request.json", "w") as f:
        json.dump({"images": str(root / "images.npz"), "exports": exports}, f)
    with open(root / "server.py", "w") as f:
        f.write(SERVER)
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    server = subprocess.Popen(
        [sys.executable, str(root / "server.py"), str(root / "request.json"), str(root / "results.json")],
        cwd=root, env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    # The Keras side while the server starts.
    references = {
        "vit": probabilities_of(vit, images, **VIT_PREPROCESSING),
        "cnn": probabilities_of(cnn, images, **CNN_PREPROCESSING),
    }
    expected = {name: references[m] for name, (m, _) in EXPORTS.items()}
    if "cnn_onnx" in EXPORTS:
        cnn_float32 = keras_smallvit.create_model(
            "resnet56", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, dtype="float32", **TINY_RESNET
        )
        cnn_float32.set_weights(cnn.get_weights())
        expected["cnn_onnx"] = probabilities_of(cnn_float32, images, **CNN_PREPROCESSING)
    _, stderr = server.communicate()
    assert server.returncode == 0, stderr[-3000:]
    with open(root / "results.json") as f:
        return json.load(f), expected


@pytest.mark.large
def test_exports_serve_the_models_probabilities_in_a_fresh_process(tmp_path):
    """One test for everything that needs the exports: a module fixture would
    be built once per pytest-xdist worker that runs one of its tests."""
    results, expected = export_and_serve(tmp_path)
    assert not results["keras_smallvit_imported"]

    # Same probabilities as the Keras model, on two batch sizes and other image sizes, float32.
    for name in EXPORTS:
        got = results[name]
        assert got["dtype"] == "float32", name
        # The mixed-precision SavedModel computes in bfloat16 (8-bit mantissa), with TF's kernels;
        # ONNX resizes with matrix products (a resized pixel may round to the next uint8 value).
        atol = 2e-2 if name == "cnn_saved_model" else 1e-5
        for key in got["probabilities"]:
            probabilities = np.array(got["probabilities"][key])
            key_atol = atol if key.startswith("batch") or "onnx" not in name else 1e-2
            np.testing.assert_allclose(probabilities, expected[name][key], atol=key_atol, err_msg=f"{name} {key}")
            np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5, err_msg=f"{name} {key}")
        assert sorted(got["probabilities"]) == sorted(expected[name]), name

        # The top classes by name, best first: the model's names, else the indices.
        names = VIT_CLASS_NAMES if name.startswith("vit") else [str(i) for i in range(NUM_CLASSES)]
        classes, top_probabilities = got["top_k"]
        order = np.argsort(-np.array(got["probabilities"]["batch_1"]), axis=-1)[:, :TOP_K]
        assert classes == [[names[i] for i in row] for row in order], name
        np.testing.assert_allclose(
            top_probabilities, np.take_along_axis(np.array(got["probabilities"]["batch_1"]), order, -1), atol=1e-6
        )

    # Named signatures, the preprocessing and class names recorded.
    vit = results["vit_saved_model"]
    assert vit["signatures"] == ["logits", "model_logits", "serve", "serving_default"]
    outputs = {
        "probabilities": [[None, NUM_CLASSES], "float32"],
        "top_k_classes": [[None, TOP_K], "string"],
        "top_k_indices": [[None, TOP_K], "int32"],
        "top_k_probabilities": [[None, TOP_K], "float32"],
    }
    for name in ("vit_saved_model", "cnn_saved_model"):
        assert results[name]["input_specs"] == {"images": [[None, None, None, 3], "uint8"]}, name
        assert results[name]["output_specs"] == outputs, name
    logits = np.array(vit["logits"])
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(-1, keepdims=True), vit["probabilities"]["batch_1"], atol=1e-6)
    np.testing.assert_allclose(vit["serve"], vit["probabilities"]["batch_1"], atol=0)
    onnx_names = [name for name in EXPORTS if name.endswith("onnx")]
    for name in onnx_names:
        assert results[name]["input_specs"] == {"images": [["batch", "height", "width", 3], "tensor(uint8)"]}
        assert results[name]["output_specs"]["probabilities"] == [["batch", NUM_CLASSES], "tensor(float)"]
        assert results[name]["output_specs"]["top_k_classes"][1] == "tensor(string)"
    for name in EXPORTS:
        config = results[name]["config"]
        preprocessing = CNN_PREPROCESSING if name.startswith("cnn") else VIT_PREPROCESSING
        expected_preprocessing = {"scale": 1 / 255, "mean": None, "std": None, "resize": "squash", **preprocessing}
        assert config["preprocessing"] == expected_preprocessing, name
        assert config["inputs"] == {"images": {"dtype": "uint8", "shape": [None, None, None, 3]}}, name
        assert config["image_size"] == [IMAGE_SIZE, IMAGE_SIZE], name
        names = VIT_CLASS_NAMES if name.startswith("vit") else [str(i) for i in range(NUM_CLASSES)]
        assert config["class_names"] == names, name

    # Bad inputs fail at the serving boundary, naming the expected dtype / shape.
    for name in ("vit_saved_model", "cnn_saved_model"):
        errors = results[name]["errors"]
        assert "uint8" in errors["float32"], errors["float32"]
        for key in ("one_channel", "rank_3"):
            assert errors[key] and "[?,?,?,3]" in errors[key], errors[key]
    for name in onnx_names:
        errors = results[name]["errors"]
        assert "expected: (tensor(uint8))" in errors["float32"], errors["float32"]
        assert "index: 3 Got: 1 Expected: 3" in errors["one_channel"], errors["one_channel"]
        assert "rank" in errors["rank_3"].lower(), errors["rank_3"]


@pytest.fixture(scope="module")
def classifier():
    """A tiny classifier, for the checks that fail before any export."""
    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    model = keras.Model(images, keras.layers.Dense(NUM_CLASSES)(keras.layers.GlobalAveragePooling2D()(images)))
    model.preprocessing = {"scale": 1 / 255}
    return model


def test_a_model_without_preprocessing_is_not_exported_as_pixels_over_255(tmp_path):
    """A model built fresh (or loaded from an older file) does not know how
    it was fed: the export asks instead of guessing `x / 255`."""
    model = keras_smallvit.create_model("resnet56", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, **TINY_RESNET)
    assert model.preprocessing is None and model.class_names is None
    with pytest.raises(ValueError, match="`model`: its preprocessing is unknown.*`scale`, `mean` and `std`"):
        keras_smallvit.export_for_serving(model, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_failed_export_leaves_the_previous_export_untouched(classifier, tmp_path, monkeypatch):
    previous = tmp_path / "saved_model"
    os.makedirs(previous / "variables")
    os.makedirs(previous / "assets.extra")
    config = json.dumps({"format": "saved_model", "inputs": {}, "outputs": {}}).encode()
    for name, content in [
        ("saved_model.pb", b"good graph"),
        ("variables/variables.index", b"good index"),
        ("assets.extra/serving_config.json", config),  # an export of ours: it may be replaced
    ]:
        (previous / name).write_bytes(content)
    before = tree_contents(previous)

    def crash_half_way(model, path, format, config):
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(serving, "_write", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        keras_smallvit.export_for_serving(classifier, str(previous), scale=1 / 255)
    assert tree_contents(previous) == before
    assert os.listdir(tmp_path) == ["saved_model"]  # the partial export is cleaned up


@pytest.mark.parametrize(
    "kwargs,argument,allowed",
    [
        ({"format": "tflite"}, "format", "'saved_model', 'onnx'"),
        ({"format": "ONNX"}, "format", "'saved_model', 'onnx'"),
        ({"scale": 0}, "scale", "> 0"),
        ({"mean": (0.5, 0.5)}, "mean", "3 numbers"),
        ({"std": 0.0}, "std", "> 0"),
        ({"scale": 1 / 255, "resize": "bogus"}, "resize", "'squash', 'crop', 'pad'"),
        ({"resize": "bogus"}, "resize", "'squash', 'crop', 'pad'"),
        ({"scale": 1 / 255, "top_k": 0}, "top_k", ">= 1"),
        ({"scale": 1 / 255, "class_names": ["a", "b"]}, "class_names", "5 distinct"),
    ],
)
def test_bad_arguments_name_the_argument_and_allowed_values(classifier, tmp_path, kwargs, argument, allowed):
    with pytest.raises(ValueError, match=f"`{argument}`") as error:
        keras_smallvit.export_for_serving(classifier, str(tmp_path / "out"), **kwargs)
    assert allowed in str(error.value)
    assert not os.path.exists(tmp_path / "out")


def test_resize_replaces_the_models_policy_alone(classifier, monkeypatch):
    """`resize` keeps the model's normalisation; `scale`/`mean`/`std` keep
    its resize policy. The CLI's `--resize` is the same argument."""
    from keras_smallvit.export import __main__ as cli
    from keras_smallvit.models import preset_folder

    monkeypatch.setattr(classifier, "preprocessing", {"scale": 1 / 255, "mean": 0.5, "resize": "crop"})
    config = serving.serving_config(classifier, "saved_model", resize="pad")
    assert config["preprocessing"] == {"scale": 1 / 255, "mean": 0.5, "std": None, "resize": "pad"}
    config = serving.serving_config(classifier, "saved_model", std=0.25)
    assert config["preprocessing"] == {"scale": 1 / 255, "mean": None, "std": 0.25, "resize": "crop"}
    calls = []
    monkeypatch.setattr(preset_folder, "load_classifier", lambda path: (classifier, None))
    monkeypatch.setattr(serving, "export_for_serving", lambda *args, **kwargs: calls.append(kwargs))
    cli.main(["model.keras", "out", "--resize", "pad"])
    assert calls[0]["resize"] == "pad"
    with pytest.raises(SystemExit):
        cli.main(["model.keras", "out", "--resize", "bogus"])


def test_a_backbone_is_not_a_classifier(tmp_path):
    """Backbones return a dict of tokens and attention maps (a stand-in here:
    a real one costs seconds of initializer compiles on JAX)."""
    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    tokens = keras.layers.Reshape((-1, 3))(images)
    backbone = keras.Model(images, {"sequence_output": tokens, "attention_maps": keras.layers.Softmax()(tokens)})
    with pytest.raises(ValueError, match="`model`.*'attention_maps', 'sequence_output'.*no 'logits'"):
        keras_smallvit.export_for_serving(backbone, str(tmp_path / "out"))
