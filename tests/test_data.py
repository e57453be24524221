"""Tests of `keras_smallvit.data`: offline and with fake data only, on every backend."""

import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_smallvit import data

# Pure NumPy / TFDS code (no keras, no KERAS_BACKEND in it): the same on
# every backend pass, so it runs on the TensorFlow one.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="The data loaders: NumPy and TFDS code, identical under every KERAS_BACKEND; tested on the TensorFlow pass",
)


def take_numpy(dataset, count=None):
    """The first `count` (all if `None`) examples as two stacked NumPy arrays."""
    if count is not None:
        dataset = dataset.take(count)
    # One big batch: iterating 1,437 single examples from Python is slow.
    images, labels = next(dataset.batch(100_000).as_numpy_iterator())
    return images, labels


def check_examples(dataset, image_size, num_classes):
    spec_image, spec_label = dataset.element_spec
    assert spec_image.shape == (image_size, image_size, 3) and spec_image.dtype == tf.float32
    assert spec_label.shape == () and spec_label.dtype == tf.int32
    images, labels = take_numpy(dataset)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.min() >= 0 and labels.max() < num_classes
    return images, labels


def write_image(path, size, value, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fill = value if mode == "L" else (value, value, value)
    Image.new(mode, (size, size), fill).save(path)


# --- digits ----------------------------------------------------------------------------


def test_digits_shapes_dtypes_range_and_info():
    train, info = data.load_dataset("digits", "train")
    images, labels = check_examples(train, 32, 10)
    assert info == data.DatasetInfo("digits", 10, 32, 1437, 360, tuple("0123456789"))
    assert len(images) == info.num_train and set(labels) == set(range(10))
    assert images.max() == 1.0  # 16 / 16: scaled by the data's own maximum
    # Grayscale repeated to RGB, each source pixel a 4x4 block.
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    np.testing.assert_array_equal(images[:, ::4, ::4], images[:, 3::4, 3::4])


def test_digits_non_multiple_of_8_is_bilinear():
    dataset, info = data.load_digits(image_size=20, split="test")
    images, _ = check_examples(dataset, 20, 10)
    assert info.image_size == 20 and len(images) == info.num_test


def test_digits_split_is_deterministic_and_disjoint():
    def flat(split, seed):
        images, labels = take_numpy(data.load_digits(image_size=8, split=split, seed=seed)[0])
        return {img.tobytes() + bytes([lab]) for img, lab in zip(images[..., 0], labels)}, len(images)

    train, num_train = flat("train", seed=0)
    test, num_test = flat("test", seed=0)
    assert (num_train, num_test) == (1437, 360)
    # The 1,797 digits images are all distinct, so content identifies examples.
    assert len(train) == num_train and len(test) == num_test
    assert not train & test and len(train | test) == 1797
    assert flat("train", seed=0)[0] == train
    assert flat("train", seed=1)[0] != train


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="`split`"):
        data.load_digits(split="validation")
    with pytest.raises(ValueError, match="`test_fraction`"):
        data.load_digits(test_fraction=1.0)


# --- TFDS ------------------------------------------------------------------------------


def test_cifar10_from_mock_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        dataset, info = data.load_dataset("cifar10", "train", data_dir=str(tmp_path))
        images, _ = check_examples(dataset, 32, 10)
        names = tfds.builder("cifar10", data_dir=str(tmp_path)).info.features["label"].names
    assert len(images) == 6 and info.num_classes == 10 and info.image_size == 32
    assert info.class_names == tuple(names) and len(set(names)) == 10  # TFDS's label names
    # Mock images are random uint8: scaled by 255, so the maximum is close to 1.
    assert images.max() > 0.9 and np.allclose(images * 255, np.round(images * 255), atol=1e-3)


def test_cifar100_resized_from_mock_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=3):
        dataset, info = data.load_dataset("cifar100", "test", image_size=48, data_dir=str(tmp_path))
        check_examples(dataset, 48, 100)
    assert info.num_classes == 100


@pytest.mark.parametrize("name", data.TFDS_NAMES)
def test_missing_tfds_data_fails_fast_and_says_how_to_get_it(tmp_path, name):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as error:
        data.load_dataset(name, "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert name in message and str(tmp_path) in message and "tfds.load(" in message


# --- Tiny ImageNet ---------------------------------------------------------------------


@pytest.fixture
def tiny_imagenet_dir(tmp_path):
    """A two-class tiny-imagenet-200 layout; pixel value encodes the class."""
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # unsorted on purpose: labels follow sorted order
    values = {"n01": 50, "n02": 200}
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        for i in range(3):
            write_image(str(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"), 64, values[wnid])
    # Validation labels only live in the annotations file; one grayscale JPEG.
    annotations = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n01"), ("val_2.JPEG", "n02")]
    for i, (filename, wnid) in enumerate(annotations):
        write_image(str(root / "val" / "images" / filename), 64, values[wnid], mode="L" if i == 2 else "RGB")
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in annotations)
    )
    # The archive's words.txt covers all of ImageNet's wnids; n02 has none here.
    (root / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\n")
    return root


def test_tiny_imagenet_val_labels_come_from_annotations(tiny_imagenet_dir):
    dataset, info = data.load_dataset("tiny_imagenet", "test", data_dir=str(tiny_imagenet_dir))
    images, labels = check_examples(dataset, 64, 2)
    # Class names: the first word of words.txt with the wnid, the wnid alone without a word.
    assert info == data.DatasetInfo("tiny_imagenet", 2, 64, 6, 3, ("goldfish (n01)", "n02"))
    np.testing.assert_array_equal(labels, [1, 0, 1])  # n01 -> 0, n02 -> 1
    # Each image's brightness matches the class the annotations file gives it.
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), [200 / 255, 50 / 255, 200 / 255], atol=0.02)


def test_tiny_imagenet_train_and_parent_dir(tiny_imagenet_dir):
    # The folder the zip was unpacked into works too.
    parent = str(tiny_imagenet_dir.parent)
    dataset, info = data.load_dataset("tiny_imagenet", "train", image_size=32, data_dir=parent)
    images, labels = check_examples(dataset, 32, 2)
    assert sorted(labels) == [0, 0, 0, 1, 1, 1] and info.num_train == 6
    assert np.all((images.mean(axis=(1, 2, 3)) > 0.5) == (labels == 1))


def test_missing_tiny_imagenet_raises_file_not_found(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        data.load_dataset("tiny_imagenet", "test", data_dir=str(missing))
    with pytest.raises(FileNotFoundError, match="data_dir"):
        data.load_dataset("tiny_imagenet", "train")


# --- folder:<path> ---------------------------------------------------------------------


def test_image_folder(tmp_path):
    for split, count in (("train", 2), ("test", 1)):
        for class_name, value in (("cat", 30), ("dog", 220)):
            for i in range(count):
                ext = "png" if i else "jpg"
                write_image(str(tmp_path / split / class_name / f"{i}.{ext}"), 24, value)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    name = f"folder:{tmp_path}"
    train, info = data.load_dataset(name, "train")
    images, labels = check_examples(train, 24, 2)
    assert info == data.DatasetInfo(name, 2, 24, 4, 2, ("cat", "dog"))
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])  # cat, dog: alphabetical
    test, _ = data.load_dataset(name, "test", image_size=16)
    images, labels = check_examples(test, 16, 2)
    assert np.all((images.mean(axis=(1, 2, 3)) > 0.5) == (labels == 1))


def test_missing_folder_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        data.load_dataset(f"folder:{tmp_path / 'nowhere'}", "train")


# --- check_data: the loaders' layout checks without TensorFlow ----------------------


def test_check_data_passes_what_the_loaders_load(tiny_imagenet_dir, tmp_path):
    for split in ("train", "val"):  # val/ stands in for test/
        for name in ("cat", "dog"):
            write_image(str(tmp_path / "images" / split / name / "0.png"), 8, 10)
    for name, data_dir in [
        ("digits", None),
        ("tiny_imagenet", str(tiny_imagenet_dir)),
        ("tiny_imagenet", str(tiny_imagenet_dir.parent)),  # the folder the zip was unpacked into
        (f"folder:{tmp_path / 'images'}", None),
    ]:
        data.check_data(name, data_dir)
        for split in data.SPLITS:
            data.load_dataset(name, split, data_dir=data_dir)


def test_check_data_fails_with_the_loaders_message(tmp_path):
    only_train = tmp_path / "only_train"
    for name in ("cat", "dog"):
        write_image(str(only_train / "train" / name / "0.png"), 8, 10)
        write_image(str(tmp_path / "foreign" / "train" / name / "0.png"), 8, 10)
    write_image(str(tmp_path / "foreign" / "test" / "fox" / "0.png"), 8, 10)
    write_image(str(tmp_path / "one_class" / "cat" / "0.png"), 8, 10)
    write_image(str(tmp_path / "empty" / "train" / "cat" / "0.png"), 8, 10)
    write_image(str(tmp_path / "empty" / "test" / "cat" / "0.png"), 8, 10)
    (tmp_path / "empty" / "train" / "dog" / ".hidden").mkdir(parents=True)
    for name, data_dir, split in [
        ("tiny_imagenet", str(tmp_path / "nowhere"), "train"),
        ("tiny_imagenet", None, "train"),
        (f"folder:{tmp_path / 'nowhere'}", None, "train"),
        (f"folder:{only_train}", None, "test"),
        (f"folder:{tmp_path / 'foreign'}", None, "test"),  # a test class that train/ lacks
        (f"folder:{tmp_path / 'one_class'}", None, "train"),
        (f"folder:{tmp_path / 'empty'}", None, "train"),  # dog/ holds nothing but a hidden folder
        ("folder:", None, "train"),
    ]:
        with pytest.raises((FileNotFoundError, ValueError)) as fast:
            data.check_data(name, data_dir)
        with pytest.raises(type(fast.value)) as full:
            data.load_dataset(name, split, data_dir=data_dir)
        assert str(fast.value) == str(full.value)
    with pytest.raises(FileNotFoundError) as fast:
        data.check_data("cifar100", str(tmp_path))
    with pytest.raises(FileNotFoundError) as full:
        data.load_dataset("cifar100", "train", data_dir=str(tmp_path))
    # The same message; TFDS also names the version folder it looked for.
    looked_for = str(tmp_path / "cifar100")
    assert f"(looked for {looked_for})" in str(fast.value)
    version = str(full.value).split(f"looked for {looked_for}{os.sep}", 1)[1].split(")", 1)[0]
    assert str(fast.value) == str(full.value).replace(f"{looked_for}{os.sep}{version})", f"{looked_for})")


# --- argument checks -------------------------------------------------------------------


def test_unknown_name_and_bad_split():
    with pytest.raises(ValueError, match="`name`") as error:
        data.load_dataset("imagenet", "train")
    assert "cifar100" in str(error.value) and "tiny_imagenet" in str(error.value)
    with pytest.raises(ValueError, match="`split`"):
        data.load_dataset("digits", "val")
    with pytest.raises(ValueError, match="`name`"):
        data.default_image_size("mnist")


def test_default_image_sizes():
    assert [data.default_image_size(n) for n in ("digits", "cifar10", "cifar100", "svhn_cropped")] == [32] * 4
    assert data.default_image_size("tiny_imagenet") == 64
    assert data.default_image_size("folder:/some/where") is None
