"""Issue 28's data: the class-balanced training subsets (`subset_ratio`) and
the TFDS loaders of ImageNet, CUB-200 and Flowers-102 (mocked TFDS: nothing
is downloaded), with ImageNet's manual-download error."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_smallvit import data
from keras_smallvit.training import TrainConfig
from keras_smallvit.training import pipeline
from keras_smallvit.training import run_guard

# NumPy and TFDS code, the same under every KERAS_BACKEND.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="The subset and the loaders: NumPy and TFDS code, identical under every KERAS_BACKEND; "
    "tested on the TensorFlow pass",
)


def uneven_labels():
    """Classes of 3, 40, 100 and 7 examples, interleaved."""
    labels = np.repeat(np.arange(4), [3, 40, 100, 7])
    return np.random.default_rng(5).permutation(labels)


def test_subset_is_class_balanced_seeded_and_stable():
    labels = uneven_labels()
    picks = data.class_balanced_subset(labels, 0.1, seed=3)
    assert np.all(np.diff(picks) > 0)  # sorted, no repeats
    # round(0.1 n_c) of each class, at least one.
    assert [int(np.sum(labels[picks] == c)) for c in range(4)] == [1, 4, 10, 1]
    np.testing.assert_array_equal(picks, data.class_balanced_subset(labels.copy(), 0.1, seed=3))  # stable
    assert not np.array_equal(picks, data.class_balanced_subset(labels, 0.1, seed=4))
    # Each class drawn by its own (seed, class) stream: the other classes'
    # examples do not change which images of a class are kept.
    members = np.flatnonzero(labels == 2)
    want = members[np.random.default_rng([3, 2]).permutation(len(members))[:10]]
    np.testing.assert_array_equal(np.sort(want), picks[labels[picks] == 2])
    np.testing.assert_array_equal(data.class_balanced_subset(labels, 1.0), np.arange(len(labels)))
    for ratio in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="`ratio`"):
            data.class_balanced_subset(labels, ratio)


def test_subset_ratio_is_checked_and_recorded(tmp_path):
    for changes, field in [({"subset_ratio": 0.0}, "subset_ratio"), ({"subset_ratio": 2.0}, "subset_ratio"),
                           ({"subset_seed": -1}, "subset_seed")]:
        with pytest.raises(ValueError, match=f"`{field}`"):
            TrainConfig(**changes).check_fields()
    config = TrainConfig(subset_ratio=0.05, subset_seed=7, workdir=str(tmp_path))
    again = TrainConfig.from_json(config.to_json())
    assert (again.subset_ratio, again.subset_seed) == (0.05, 7)
    # A resume with another subset trains on other images: refused.
    with open(os.path.join(tmp_path, run_guard.CONFIG_FILE), "w") as f:
        f.write(config.to_json())
    assert run_guard.check_resumable(config, str(tmp_path))
    with pytest.raises(run_guard.RunFolderMismatch, match="subset_ratio"):
        run_guard.check_resumable(TrainConfig(subset_ratio=0.1, subset_seed=7, workdir=str(tmp_path)), str(tmp_path))


def test_the_run_loads_the_subset_of_a_tfds_split(tmp_path):
    """The in-memory path keeps exactly `class_balanced_subset` of the
    split's labels, in stored order, and decodes only those images."""
    config = TrainConfig(dataset="cifar10", data_dir=str(tmp_path), subset_ratio=0.25, subset_seed=1)
    with tfds.testing.mock_data(num_examples=60):
        labels = data.load_labels("cifar10", "train", str(tmp_path))
        every, _ = data.load_dataset("cifar10", "train", data_dir=str(tmp_path))
        every_images = np.concatenate([i for i, _ in every.batch(100).as_numpy_iterator()])
        loaded = pipeline.load_split(config, "train")
        test = pipeline.load_split(config, "test")
    picks = data.class_balanced_subset(labels, 0.25, seed=1)
    assert len(labels) == 60 and len(loaded) == len(picks) < 60
    np.testing.assert_array_equal(loaded.labels, labels[picks])
    np.testing.assert_array_equal(loaded.images, np.round(every_images[picks] * 255).astype("uint8"))
    assert len(test) == 60  # the test split is whole


def test_the_subset_of_an_image_folder(tmp_path):
    from PIL import Image

    for c, count in enumerate((4, 8)):
        for i in range(count):
            path = tmp_path / "train" / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (10 * i, 100 * c, 0)).save(path)
    config = TrainConfig(dataset=f"folder:{tmp_path}", subset_ratio=0.5, validation_split=None)
    loaded = pipeline.load_split(config, "train")
    assert sorted(loaded.labels.tolist()) == [0, 0, 1, 1, 1, 1]


# --- the TFDS loaders of issue 28 ----------------------------------------------------------


@pytest.mark.parametrize(
    "name, split, tfds_split, classes",
    [
        ("imagenet2012", "test", "validation", 1000),
        ("imagenet2012", "train", "train", 1000),
        ("oxford_flowers102", "train", "train+validation", 102),
        ("oxford_flowers102", "test", "test", 102),
    ],
)
def test_tfds_loaders_read_the_papers_splits(tmp_path, name, split, tfds_split, classes):
    asked = []

    def as_dataset(self, split, **kwargs):
        asked.append(str(split))
        return tf.data.Dataset.from_tensor_slices(
            {"image": np.full((3, 40, 30, 3), 200, "uint8"), "label": np.array([0, 5, classes - 1], "int64")}
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        dataset, info = data.load_dataset(name, split, data_dir=str(tmp_path))
        images, labels = next(dataset.batch(10).as_numpy_iterator())
    assert asked == [tfds_split], asked
    assert images.shape == (3, 224, 224, 3) and info.image_size == 224 == data.default_image_size(name)
    assert labels.tolist() == [0, 5, classes - 1] and info.num_classes == classes == len(info.class_names)


def test_caltech_birds_loader(tmp_path):
    def as_dataset(self, split, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {"image": np.zeros((2, 50, 60, 3), "uint8"), "label": np.array([3, 199], "int64")}
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        dataset, info = data.load_dataset("caltech_birds2011", "train", data_dir=str(tmp_path))
        images, labels = next(dataset.batch(10).as_numpy_iterator())
    assert images.shape == (2, 224, 224, 3) and labels.tolist() == [3, 199] and info.num_classes == 200


def test_imagenet_subset_decodes_the_kept_images_only(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        labels = data.load_labels("imagenet2012", "train", str(tmp_path))
        dataset, _ = data.load_dataset("imagenet2012", "train", image_size=32, data_dir=str(tmp_path),
                                       indices=[1, 4, 11])
        images, kept = next(dataset.batch(10).as_numpy_iterator())
    assert images.shape == (3, 32, 32, 3) and kept.tolist() == labels[[1, 4, 11]].tolist()


def test_imagenet_without_its_manual_files_says_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.load_dataset("imagenet2012", "train", data_dir=str(tmp_path))
    message = str(error.value)
    manual = os.path.join(str(tmp_path), "downloads", "manual")
    assert manual in message and "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert "image-net.org" in message
    with pytest.raises(FileNotFoundError, match="imagenet2012"):  # the fast check before TensorFlow
        data.check_data("imagenet2012", str(tmp_path))
    # Both archives in place: the message says to prepare them, not to download.
    os.makedirs(manual)
    for name in data.IMAGENET_MANUAL_FILES:
        open(os.path.join(manual, name), "w").close()
    with pytest.raises(FileNotFoundError, match="Both archives are in"):
        data.load_dataset("imagenet2012", "test", data_dir=str(tmp_path))
