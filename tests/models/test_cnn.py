"""CNN baselines (ResNet-56/110, EfficientNet-B0) and attention-link teachers
(ResNet-34, EfficientNet-B3).

Parameter counts are checked against arithmetic written from the
architectures' definitions (He et al. 2016; Tan & Le 2019, Table 1 and
compound scaling), and that arithmetic against the published counts.
"""

import contextlib
import math
import os

import keras
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.models import EfficientNet
from keras_smallvit.models import ResNet
from keras_smallvit.models.cnn import ZeroPadShortcut
from keras_smallvit.models.cnn import load_weights_file
from tests.contract import ARCHITECTURE_ONLY
from tests.contract import BACKEND
from tests.contract import LayerContract
from tests.contract import ModelContract
from tests.contract import as_numpy

CNN_NAMES = ("resnet56", "resnet110", "resnet34", "efficientnet_b0", "efficientnet_b3")
TINY_CIFAR = dict(
    stage_blocks=(1, 2), stage_widths=(4, 8), stem="cifar", stem_width=4, shortcut="zero_pad", image_size=16
)
TINY_IMAGENET = dict(
    stage_blocks=(1, 1), stage_widths=(4, 8), stem="imagenet", stem_width=4, shortcut="projection", image_size=16
)


@pytest.fixture(scope="module", autouse=True)
def _no_downloads_and_fast_jax_builds():
    """Any download attempt fails the tests; on JAX, builds are made cheaper.

    JAX compiles its random and fill kernels once per weight shape (~0.1-0.5 s
    each; EfficientNet-B0 has ~150 shapes), so on JAX this module draws the
    (truncated) normal initial weights with NumPy (their values do not matter
    here) and asks XLA for fewer optimisations (faster compiles, same
    semantics).
    """

    def no_download(*args, **kwargs):
        raise AssertionError(f"download attempted: get_file{args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.src.utils.file_utils, "get_file", no_download)
        patch.setattr(keras.utils, "get_file", no_download)
        with contextlib.ExitStack() as stack:
            if BACKEND == "jax":
                import jax

                rng = np.random.default_rng(0)

                def truncated_normal(key, lower=-2.0, upper=2.0, shape=(), dtype=float, **kwargs):
                    return np.clip(rng.standard_normal(shape), lower, upper).astype(dtype)

                def normal(key, shape=(), dtype=float, **kwargs):
                    return rng.standard_normal(shape).astype(dtype)

                patch.setattr(jax.random, "truncated_normal", truncated_normal)
                patch.setattr(jax.random, "normal", normal)
                previous = jax.config.read("jax_disable_most_optimizations")
                jax.config.update("jax_disable_most_optimizations", True)
                stack.callback(jax.config.update, "jax_disable_most_optimizations", previous)
            yield


def images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype("float32")


def infer(model, x):
    """Inference outputs as NumPy: one XLA compile on JAX (its eager mode
    compiles every op), eager elsewhere (cheaper than tracing a graph once)."""
    if BACKEND == "jax":
        return model.predict(x, verbose=0)
    return keras.tree.map_structure(as_numpy, model(x, training=False))


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def randomize_batch_norms(model, seed=0):
    """Non-trivial BatchNorm statistics, so inference-mode BN is not ~identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)]
            )


# === Independent arithmetic ===


def conv_params(kernel, c_in, c_out, bias=False):
    return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def resnet_params(stage_blocks, stage_widths, stem_kernel, stem_width, projection, num_classes, in_channels=3):
    """(trainable parameters, BatchNorm channels) of a basic-block ResNet."""
    trainable, bn = conv_params(stem_kernel, in_channels, stem_width), stem_width
    c = stem_width
    for s, (blocks, w) in enumerate(zip(stage_blocks, stage_widths)):
        for b in range(blocks):
            trainable += conv_params(3, c, w) + conv_params(3, w, w)
            bn += 2 * w
            if projection and (c != w or (b == 0 and s > 0)):
                trainable += conv_params(1, c, w)
                bn += w
            c = w
    return trainable + 2 * bn + c * num_classes + num_classes, bn


# EfficientNet-B0, Tan & Le 2019 Table 1: (expand ratio, kernel, channels, repeats)
# per stage after a 32-channel stem, then a 1x1 conv to 1280; SE ratio 0.25 of
# the block input; B3 = width x1.2, depth x1.4.
B0_STAGES = ((1, 3, 16, 1), (6, 3, 24, 2), (6, 5, 40, 2), (6, 3, 80, 3), (6, 5, 112, 3), (6, 5, 192, 4), (6, 3, 320, 1))


def efficientnet_params(width, depth, num_classes):
    """(trainable parameters, non-trainable parameters) of EfficientNet."""

    def scaled(channels):
        new = max(8, int(channels * width + 4) // 8 * 8)
        return new + 8 if new < 0.9 * channels * width else new

    trainable, bn = conv_params(3, 3, scaled(32)), scaled(32)
    c = scaled(32)
    for expand, kernel, out, repeats in B0_STAGES:
        for _ in range(math.ceil(depth * repeats)):
            mid, squeeze, out_c = c * expand, max(1, int(c * 0.25)), scaled(out)
            if expand != 1:
                trainable += conv_params(1, c, mid)
                bn += mid
            trainable += kernel * kernel * mid  # depthwise
            trainable += conv_params(1, mid, squeeze, bias=True) + conv_params(1, squeeze, mid, bias=True)
            trainable += conv_params(1, mid, out_c)
            bn += mid + out_c
            c = out_c
    top = scaled(1280)
    trainable += conv_params(1, c, top) + num_classes * top + num_classes
    bn += top
    # Moving mean/variance per BN channel, plus Keras' input Normalization (mean, variance, count).
    return trainable + 2 * bn, 2 * bn + 2 * 3 + 1


def test_arithmetic_matches_published_counts():
    # pytorch_resnet_cifar10 (option A): ResNet-56 0.85M, ResNet-110 1.7M.
    assert round(resnet_params((9,) * 3, (16, 32, 64), 3, 16, False, 10)[0] / 1e6, 2) == 0.85
    assert round(resnet_params((18,) * 3, (16, 32, 64), 3, 16, False, 10)[0] / 1e6, 1) == 1.7
    # Option B would be 0.86M for ResNet-56: option A is the one that matches.
    assert round(resnet_params((9,) * 3, (16, 32, 64), 3, 16, True, 10)[0] / 1e6, 2) == 0.86
    # torchvision resnet34, efficientnet_b0, efficientnet_b3 (1000 classes).
    assert resnet_params((3, 4, 6, 3), (64, 128, 256, 512), 7, 64, True, 1000)[0] == 21_797_672
    assert efficientnet_params(1.0, 1.0, 1000)[0] == 5_288_548
    assert efficientnet_params(1.2, 1.4, 1000)[0] == 12_233_232


# === Registry ===


def test_registry_entries():
    entries = keras_smallvit.list_models(details=True)
    for name in CNN_NAMES:
        assert entries[name].techniques == ()
        # Lee et al. 2021, Sec. 4.1.3: lr 0.003 for ViT and the CNNs.
        assert entries[name].paper_lr == 3e-3


def test_transformer_techniques_on_a_cnn_raise_value_error():
    for name in CNN_NAMES:
        for techniques in [("spt",), ("lsa",), ("sata",), ("cb",), ("spt", "lsa", "sata", "cb")]:
            with pytest.raises(ValueError, match="`techniques`.*CNN"):
                keras_smallvit.create_model(name, num_classes=10, image_size=32, techniques=techniques)


def test_imagenet_weights_are_refused_before_the_build_where_keras_has_none():
    # The EfficientNets' ImageNet weights: tests/aal/test_pretrained_teacher.py.
    for name in [n for n in CNN_NAMES if n.startswith("resnet")]:
        with pytest.raises(ValueError, match="`weights`: 'imagenet' for ResNet.*keras.applications has no ResNet-34"):
            keras_smallvit.create_model(name, num_classes=10, image_size=32, weights="imagenet")


def test_missing_weights_file_raises_file_not_found_naming_the_path(tmp_path):
    path = os.path.join(tmp_path, "nowhere", "teacher.weights.h5")
    with pytest.raises(FileNotFoundError, match="nowhere/teacher.weights.h5"):
        keras_smallvit.create_model("resnet34", num_classes=10, image_size=32, weights=path)
    with pytest.raises(ValueError, match="`weights`"):
        keras_smallvit.create_model("resnet34", num_classes=10, image_size=32, weights=os.fspath(tmp_path))


@pytest.mark.parametrize(
    "cls,kwargs,argument",
    [
        (ResNet, {"stem": "deep"}, "stem"),
        (ResNet, {"shortcut": "conv"}, "shortcut"),
        (ResNet, {"stage_widths": (16, 32)}, "stage_widths"),
        (ResNet, {"stage_widths": (64, 32, 16), "shortcut": "zero_pad"}, "shortcut"),
        (ResNet, {"stage_blocks": (9, 0, 9)}, "stage_blocks"),
        (ResNet, {"dropout": 1.0}, "dropout"),
        (ResNet, {"num_classes": 0}, "num_classes"),
        (EfficientNet, {"variant": "b9"}, "variant"),
        (EfficientNet, {"image_size": 16}, "image_size"),
        (EfficientNet, {"input_scale": 0}, "input_scale"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(cls, kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}"):
        cls(**kwargs)


# === Option-A shortcut ===


class TestZeroPadShortcutContract(LayerContract):
    input_shape = (2, 8, 8, 4)
    has_trainable_weights = False

    def layer_factory(self, dtype):
        return ZeroPadShortcut(8, 2, dtype=dtype)


def test_zero_pad_shortcut_matches_numpy():
    x = images(2, 6)[..., :3]
    y = as_numpy(ZeroPadShortcut(7, 2)(x))
    want = np.zeros((2, 3, 3, 7), "float32")
    want[..., 2:5] = x[:, 0::2, 0::2, :]  # 4 new channels: 2 before, 2 after
    np.testing.assert_array_equal(y, want)


# === ResNet: contract on tiny configs ===


@pytest.mark.parametrize("config", [TINY_CIFAR, TINY_IMAGENET], ids=["cifar", "imagenet"])
def test_resnet_matches_numpy_reference(config):
    """Full forward pass in NumPy with PyTorch's conventions (symmetric
    padding k//2, option A / option B shortcuts, inference BatchNorm)."""
    model = ResNet(num_classes=5, **config)
    randomize_batch_norms(model)
    w = lambda name: [as_numpy(v).astype(np.float64) for v in model.get_layer(name).weights]  # noqa: E731

    def conv(x, name, stride):
        (kernel,) = w(name)
        k = kernel.shape[0]
        x = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        h, v = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
        out = 0.0
        for i in range(k):
            for j in range(k):
                out = out + x[:, i : i + stride * h : stride, j : j + stride * v : stride] @ kernel[i, j]
        return out

    def bn(x, name):
        gamma, beta, mean, var = w(name)
        return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta

    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    x = images(2, 16).astype(np.float64)
    if config["stem"] == "imagenet":
        x = relu(bn(conv(x, "stem_conv", 2), "stem_bn"))
        x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        n = (x.shape[1] - 3) // 2 + 1
        x = np.max([x[:, i : i + 2 * n : 2, j : j + 2 * n : 2] for i in range(3) for j in range(3)], axis=0)
    else:
        x = relu(bn(conv(x, "stem_conv", 1), "stem_bn"))
    c = config["stem_width"]
    for s, (blocks, width) in enumerate(zip(config["stage_blocks"], config["stage_widths"]), start=1):
        for b in range(1, blocks + 1):
            name, stride = f"stage{s}_block{b}", (2 if b == 1 and s > 1 else 1)
            r = relu(bn(conv(x, f"{name}_conv1", stride), f"{name}_bn1"))
            r = bn(conv(r, f"{name}_conv2", 1), f"{name}_bn2")
            if stride == 1 and c == width:
                short = x
            elif config["shortcut"] == "zero_pad":
                sub = x[:, ::stride, ::stride]
                pad = width - c
                short = np.pad(sub, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
            else:
                short = bn(conv(x, f"{name}_shortcut_conv", stride), f"{name}_shortcut_bn")
            x, c = relu(r + short), width
    kernel, bias = w("logits")
    want = x.mean(axis=(1, 2)) @ kernel + bias
    np.testing.assert_allclose(infer(model, images(2, 16)), want, atol=1e-4)


def test_resnet_config_round_trip():
    model = ResNet(num_classes=5, dropout=0.1, **TINY_IMAGENET)
    config = model.get_config()
    restored = ResNet.from_config(config)
    assert restored.get_config() == config
    assert restored.count_params() == model.count_params()


class TestResNet(ModelContract):
    all_weights_move = True
    # One block (with a projection shortcut): XLA compiles of the train step are slow.
    mixed_kwargs = {**TINY_IMAGENET, "stage_blocks": (1,), "stage_widths": (8,)}
    half_layers = ("stage1_block1_conv1",)

    def model_factory(self, dtype=None, **kwargs):
        return ResNet(num_classes=5, dtype=dtype, **{**TINY_CIFAR, **kwargs})

    def check_mixed_model(self, model):
        assert model.get_layer("logits").compute_dtype == "float32"


# === Full-size presets ===


@pytest.mark.large
def test_resnet56_parameter_count_forward_and_stage_shapes_at_64px():
    model = keras_smallvit.create_model("resnet56", num_classes=200, image_size=64)
    want, bn_channels = resnet_params((9, 9, 9), (16, 32, 64), 3, 16, False, 200)
    assert trainable_count(model) == want
    assert model.count_params() == want + 2 * bn_channels  # + BN moving mean/variance
    assert not any("shortcut_conv" in layer.name for layer in model.layers)  # option A
    logits = infer(model, images(2, 64))
    assert logits.shape == (2, 200) and logits.dtype == np.float32 and np.isfinite(logits).all()
    shapes = {name: tuple(t.shape) for name, t in model.feature_model().output.items()}
    assert shapes == {
        "stage1_block9_out": (None, 64, 64, 16),
        "stage2_block9_out": (None, 32, 32, 32),
        "stage3_block9_out": (None, 16, 16, 64),
    }


@ARCHITECTURE_ONLY
@pytest.mark.large
def test_resnet110_parameter_count_at_32px():
    model = keras_smallvit.create_model("resnet110", num_classes=10, image_size=32)
    want, bn_channels = resnet_params((18, 18, 18), (16, 32, 64), 3, 16, False, 10)
    assert trainable_count(model) == want == 1_727_962
    assert model.count_params() == want + 2 * bn_channels
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]) == 109  # + Dense = 110
    assert model.output.shape == (None, 10)


@ARCHITECTURE_ONLY
def test_resnet34_imagenet_stem_count_and_feature_shapes():
    model = keras_smallvit.create_model("resnet34", num_classes=100, image_size=32)
    assert trainable_count(model) == resnet_params((3, 4, 6, 3), (64, 128, 256, 512), 7, 64, True, 100)[0]
    shapes = {name: tuple(t.shape) for name, t in model.feature_model().output.items()}
    assert shapes == {
        "stage1_block3_out": (None, 8, 8, 64),
        "stage2_block4_out": (None, 4, 4, 128),
        "stage3_block6_out": (None, 2, 2, 256),
        "stage4_block3_out": (None, 1, 1, 512),
    }
    bn_names = model.normalization_output_names
    assert len(bn_names) == 1 + 2 * 16 + 3  # stem, two per block, three projections
    assert all(isinstance(model.get_layer(n), keras.layers.BatchNormalization) for n in bn_names)
    with pytest.raises(ValueError, match="`layer_names`"):
        model.feature_model(["stage5_block1_out"])


@ARCHITECTURE_ONLY
def test_resnet34_cifar_stem_count_and_feature_shapes():
    # The small-image variant: 3x3 conv, stride 1, no max-pool.
    model = keras_smallvit.create_model("resnet34", num_classes=10, image_size=32, stem="cifar")
    assert trainable_count(model) == resnet_params((3, 4, 6, 3), (64, 128, 256, 512), 3, 64, True, 10)[0]
    assert "stem_pool" not in [layer.name for layer in model.layers]
    shapes = [tuple(t.shape)[1:] for t in model.feature_model().output.values()]
    assert shapes == [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512)]


def test_resnet34_weights_from_local_file_give_identical_outputs(tmp_path):
    # ResNet-34's layout at 1/8 width: the file mechanics are the same, the
    # 85 MB file of the full model would only slow CI down.
    thin = dict(stem_width=8, stage_widths=(8, 16, 32, 64))
    source = keras_smallvit.create_model("resnet34", num_classes=10, image_size=32, **thin)
    randomize_batch_norms(source)
    path = os.path.join(tmp_path, "teacher.weights.h5")
    source.save_weights(path)
    loaded = keras_smallvit.create_model("resnet34", num_classes=10, image_size=32, weights=path, **thin)
    x = images(2, 32)
    np.testing.assert_array_equal(infer(loaded, x), infer(source, x))


def test_keras_file_is_accepted_as_weights(tmp_path):
    source = keras_smallvit.create_model("resnet56", num_classes=3, image_size=16, stage_blocks=(1, 1, 1))
    path = os.path.join(tmp_path, "small.keras")
    source.save(path)
    loaded = keras_smallvit.create_model("resnet56", num_classes=3, image_size=16, stage_blocks=(1, 1, 1), weights=path)
    for a, b in zip(loaded.weights, source.weights):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))


@pytest.mark.large
def test_efficientnet_b0_at_32px(tmp_path):
    model = keras_smallvit.create_model("efficientnet_b0", num_classes=10, image_size=32)
    trainable, non_trainable = efficientnet_params(1.0, 1.0, 10)
    assert trainable_count(model) == trainable
    assert model.count_params() == trainable + non_trainable
    assert model.dropout == 0.2  # Keras / paper default for B0
    shapes = [tuple(t.shape)[1:] for t in model.feature_model().output.values()]
    assert shapes == [(16, 16, 16), (8, 8, 24), (4, 4, 40), (2, 2, 80), (2, 2, 112), (1, 1, 192), (1, 1, 320)]

    # Input range: [0, 1] images are scaled by 255 for Keras' Rescaling(1/255);
    # with no ImageNet statistics, Normalization is the identity: the network sees [0, 1].
    x = images(2, 32)
    (norm,) = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    seen = infer(model.feature_model([norm]), x)[norm]
    np.testing.assert_allclose(seen, x, atol=1e-6)

    logits = infer(model, x)
    assert logits.shape == (2, 10) and logits.dtype == np.float32 and np.isfinite(logits).all()

    # Config round trip and weights from a local file (Keras auto-names some
    # application layers, e.g. "normalization_3": loading must not depend on it).
    path = os.path.join(tmp_path, "b0.weights.h5")
    model.save_weights(path)
    config = model.get_config()
    restored = EfficientNet.from_config(config)
    assert restored.get_config() == config
    load_weights_file(restored, path)
    for a, b in zip(restored.weights, model.weights):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))


@pytest.mark.large
def test_efficientnet_b3_mixed_precision_parameter_count_and_feature_shapes_at_64px():
    model = keras_smallvit.create_model("efficientnet_b3", num_classes=200, image_size=64, dtype="mixed_float16")
    trainable, non_trainable = efficientnet_params(1.2, 1.4, 200)
    assert trainable_count(model) == trainable
    assert model.count_params() == trainable + non_trainable
    assert model.dropout == 0.3  # Keras / paper default for B3
    # Keras Applications layers follow our dtype, the logits stay float32,
    # and the global policy is left as it was.
    assert model.get_layer("stem_conv").compute_dtype == "float16"
    assert model.get_layer("logits").compute_dtype == "float32"
    assert model.output.shape == (None, 200) and model.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    shapes = [tuple(t.shape)[1:] for t in model.feature_model().output.values()]
    assert shapes == [(32, 32, 24), (16, 16, 32), (8, 8, 48), (4, 4, 96), (4, 4, 136), (2, 2, 232), (2, 2, 384)]
