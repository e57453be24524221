"""ImageNet teachers the Keras way (`--teacher-weights imagenet`): the
keras.applications file from Keras' cache, never downloaded in tests (the
download function is patched to fail); the teacher's preprocessing against
NumPy; the clear errors without network and for ResNet-34."""

import dataclasses
import hashlib
import os
import urllib.error

import keras
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit import aal
from keras_smallvit.models.cnn import imagenet
from keras_smallvit.training import TrainConfig
from tests.aal.test_aal_training import tiny_aal_config
from tests.aal.test_distiller import TINY_TEACHER
from tests.contract import as_numpy
from tests.contract import BACKEND
from tests.models.test_cnn import infer

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
SIZE = 32  # the smallest input Keras' EfficientNets take
TINY_VIT = {"depth": 2, "hidden_dim": 16, "num_heads": 2, "head_dim": 8, "patch_size": 8}


def no_download(*args, **kwargs):
    raise urllib.error.URLError("network disabled by the test")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Keras home, and the one function Keras downloads with patched to fail."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    os.makedirs(tmp_path / "keras_home")
    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", no_download)
    return tmp_path / "keras_home"


@pytest.fixture(scope="module")
def imagenet_like_b3(tmp_path_factory):
    """A stand-in for Keras' `efficientnetb3_notop.h5`: the same legacy `.h5`
    layout of the `include_top=False` graph, random weights, and the
    Normalization weights the real file holds (ImageNet mean; as variance,
    the standard deviation: tensorflow/tensorflow#49930). Returns its path,
    MD5 and the weights written, in layer order."""
    reference = keras.applications.EfficientNetB3(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    (normalization,) = [layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization)]
    normalization.set_weights([IMAGENET_MEAN.astype("float32"), IMAGENET_STD.astype("float32"), np.array(0)])
    path = os.path.join(tmp_path_factory.mktemp("weights"), imagenet.EFFICIENTNET_NOTOP_FILES["b3"][0])
    keras.saving.save_model(reference, path)  # Keras' legacy .h5, as keras.applications' files
    with open(path, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    weights = [as_numpy(w) for layer in reference.layers for w in layer.weights]
    keras.backend.clear_session(free_memory=False)
    return path, md5, weights


def place_in_cache(keras_home, path, md5, monkeypatch):
    """The stand-in file where Keras looks, with its MD5 as the expected one."""
    os.makedirs(keras_home / "models", exist_ok=True)
    cached = keras_home / "models" / os.path.basename(path)
    os.symlink(path, cached)
    monkeypatch.setitem(imagenet.EFFICIENTNET_NOTOP_FILES, "b3", (os.path.basename(path), md5))
    return cached


def test_no_network_error_names_the_model_the_url_the_cache_path_and_the_alternative(offline, monkeypatch):
    file_name, md5 = imagenet.EFFICIENTNET_NOTOP_FILES["b3"]
    with pytest.raises(imagenet.WeightsUnavailableError) as error:
        imagenet.cached_weights_file("efficientnet_b3", file_name, md5)
    message = str(error.value)
    for part in ("'efficientnet_b3'", imagenet.KERAS_APPLICATIONS_ORIGIN + file_name,
                 str(offline / "models" / file_name), "--teacher-weights PATH", "network disabled"):
        assert part in message
    # A cached file that is not the expected one is named and left in place (no download, no deletion).
    with open(offline / "models" / file_name, "wb") as f:
        f.write(b"not the weights")
    with pytest.raises(imagenet.WeightsUnavailableError, match="not the expected one.*Remove it"):
        imagenet.cached_weights_file("efficientnet_b3", file_name, md5)
    assert open(offline / "models" / file_name, "rb").read() == b"not the weights"


def test_imagenet_is_refused_where_keras_has_no_weights_and_for_logit_distillation(tmp_path):
    for name in ("resnet34", "resnet56"):
        with pytest.raises(ValueError, match="`weights`: 'imagenet' for ResNet.*no ResNet-34.*efficientnet_b3"):
            keras_smallvit.create_model(name, num_classes=10, image_size=32, weights="imagenet")
    config = dataclasses.replace(tiny_aal_config(tmp_path), aal_teacher="imagenet", aal_teacher_overrides={})
    with pytest.raises(ValueError, match="`aal_teacher` 'imagenet' for `aal_teacher_model` 'resnet34'.*keras-hub"):
        dataclasses.replace(config, aal_teacher_model="resnet34").validate()
    with pytest.raises(ValueError, match="`aal_teacher_model`: None.*efficientnet_b0, efficientnet_b3"):
        dataclasses.replace(config, aal_teacher_model=None).validate()
    with pytest.raises(ValueError, match="`distillation` 'hard' with `aal_teacher` 'imagenet'"):
        dataclasses.replace(config, aal_teacher_model="efficientnet_b3", distillation="hard").validate()
    dataclasses.replace(config, aal_teacher_model="efficientnet_b3").validate()
    # A run folder is a teacher (its last.keras); other paths are not.
    dataclasses.replace(config, aal_teacher=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="`aal_teacher`.*run folder"):
        dataclasses.replace(config, aal_teacher=str(tmp_path / "missing")).validate()
    with pytest.raises(FileNotFoundError, match="no last.keras"):
        aal.load_teacher(str(tmp_path))


def test_the_teacher_gets_the_pixels_before_the_students_normalisation():
    """`student_normalization` undone in the distiller, against NumPy; config round trip."""
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    student = keras_smallvit.create_model("vit", num_classes=3, image_size=16, **{**TINY_VIT, "patch_size": 4})
    teacher = keras_smallvit.create_model("resnet56", **TINY_TEACHER)
    distiller = aal.AttentionLinkDistiller(student, teacher, student_normalization=(mean, std))
    pixels = np.random.default_rng(0).uniform(size=(2, 16, 16, 3))
    normalized = ((pixels - mean) / std).astype("float32")
    np.testing.assert_allclose(as_numpy(distiller.teacher_images(normalized)), pixels, atol=1e-6)
    assert aal.AttentionLinkDistiller.from_config(distiller.get_config()).student_normalization == (
        mean.tolist(), std.tolist())
    logit = aal.LogitDistiller(student, teacher, student_normalization=(mean, std))
    np.testing.assert_allclose(as_numpy(logit.teacher_images(normalized)), pixels, atol=1e-6)
    assert aal.AttentionLinkDistiller(student, teacher).student_normalization is None
    for bad in [(mean, std[:2]), (mean, -std), "imagenet"]:
        with pytest.raises(ValueError, match="`student_normalization`"):
            aal.AttentionLinkDistiller(student, teacher, student_normalization=bad)


@pytest.mark.large
def test_imagenet_teacher_from_the_keras_cache_with_no_network(imagenet_like_b3, offline, monkeypatch, tmp_path):
    """`weights="imagenet"` reads the file Keras' cache holds (the download
    fails if tried); the teacher's preprocessing, inside the distiller, gives
    what Keras' ImageNet EfficientNet computes: `(pixels - mean) / std`."""
    path, md5, written = imagenet_like_b3
    cached = place_in_cache(offline, path, md5, monkeypatch)
    teacher = keras_smallvit.create_model("efficientnet_b3", num_classes=10, image_size=SIZE, weights="imagenet")

    # Every weight of the Keras Applications graph is the file's, in layer
    # order; the Normalization's variance holds Keras' extra 1/sqrt(std) rescale.
    application = keras.Model(teacher.inputs, teacher.get_layer("top_activation").output)
    loaded = [as_numpy(w) for layer in application.layers for w in layer.weights]
    assert len(loaded) == len(written)
    variance_index = next(i for i, w in enumerate(written) if w.shape == (3,) and np.allclose(w, IMAGENET_STD))
    for i, (a, b) in enumerate(zip(loaded, written)):
        if i == variance_index:
            np.testing.assert_allclose(a, b * IMAGENET_STD, rtol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)

    # The student's dataset normalisation undone, ImageNet's applied: NumPy reference.
    dataset_mean, dataset_std = np.array([0.45, 0.44, 0.41]), np.array([0.27, 0.26, 0.28])
    student = keras_smallvit.create_model("vit", num_classes=10, image_size=SIZE, **TINY_VIT)
    distiller = aal.AttentionLinkDistiller(student, teacher, student_normalization=(dataset_mean, dataset_std))
    pixels = np.random.default_rng(1).uniform(size=(2, SIZE, SIZE, 3))
    student_input = ((pixels - dataset_mean) / dataset_std).astype("float32")
    (norm,) = [layer.name for layer in teacher.layers if isinstance(layer, keras.layers.Normalization)]
    seen = infer(teacher.feature_model([norm]), as_numpy(distiller.teacher_images(student_input)))[norm]
    np.testing.assert_allclose(seen, (pixels - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-4)
    # The attention links tap Keras' own layer names: the last BatchNorm of each of the 7 blocks.
    assert distiller.teacher_block_names == tuple(f"block{i}" for i in range(1, 8))
    assert distiller.teacher_layer_names[0].startswith("block1b_") and distiller.teacher_layer_names[-1] == "block7b_project_bn"

    # --teacher-weights PATH: a Keras 3 file of that teacher loads the same weights, still offline.
    local = os.path.join(tmp_path, "b3.weights.h5")
    teacher.save_weights(local)
    config = dataclasses.replace(
        TrainConfig(model="vit", dataset="digits", aal=True), aal_teacher_model="efficientnet_b3", aal_teacher=local
    )
    from keras_smallvit.aal.recipe import build_teacher

    again = build_teacher(config.validate(), local, 10, SIZE)
    for a, b in zip(again.weights, teacher.weights):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
    if BACKEND == "torch":  # backend-independent glue: the CLI's imagenet teacher with no network
        from training.train import main

        args = ["--model", "vit", "--image-size", str(SIZE), "--warmup-epochs", "0", "--batch-size", "8",
                "--epochs", "1", "--set", "eval_batch_size=8", "--set", "data_workers=1", "--no-export",
                "--set", "augmentation=none", "--set", "max_train_examples=8", "--set", "max_test_examples=8",
                "--jit-compile", "false", *[a for k, v in TINY_VIT.items() for a in ("--set", f"model.{k}={v}")],
                "--aal", "--teacher-model", "efficientnet_b3"]
        metrics = main([*args, "--teacher-weights", "imagenet", "--workdir", str(tmp_path / "run")])
        assert metrics["aal_teacher"] == "imagenet" and np.isfinite(metrics["final_top1"])
        os.remove(cached)  # no file, no network: the clear error
        with pytest.raises(imagenet.WeightsUnavailableError, match="not in Keras' cache.*could not be downloaded"):
            main([*args, "--teacher-weights", "imagenet", "--workdir", str(tmp_path / "run2")])


def test_teacher_weights_path_and_run_folder_through_the_recipe(tmp_path):
    """`--teacher-weights PATH` (a ResNet-34 .weights.h5) and a run folder
    (its last.keras) reach the teacher through the recipe; no download."""
    from keras_smallvit.aal.recipe import build_teacher
    from keras_smallvit.aal.recipe import prepare_teacher

    thin = dict(stem_width=8, stage_widths=(8, 16, 32, 64))  # ResNet-34's layout at 1/8 width
    source = keras_smallvit.create_model("resnet34", num_classes=10, image_size=SIZE, **thin)
    path = os.path.join(tmp_path, "resnet34.weights.h5")
    source.save_weights(path)
    run = tmp_path / "teacher_run"
    os.makedirs(run)
    source.save(run / "last.keras")
    for teacher in (path, str(run)):
        config = tiny_aal_config(tmp_path, aal_teacher=teacher, aal_teacher_model="resnet34", aal_teacher_overrides=thin)
        config.validate()
        assert prepare_teacher(config, train_fn=None) == teacher  # given: no teacher run
        loaded = build_teacher(config, teacher, 10, SIZE)
        for a, b in zip(loaded.weights, source.weights):
            np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
