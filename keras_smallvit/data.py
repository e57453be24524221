"""Input pipelines for the papers' small datasets, as `tf.data.Dataset`s.

Every loader returns a dataset of unbatched `(image, label)` pairs: `image`
is float32 in [0, 1] with shape `(image_size, image_size, 3)`, `label` is an
int32 scalar. Only `tf.data` and `tf` ops run inside the pipelines (never
Keras layers), so the same datasets feed a model on the TensorFlow, JAX or
PyTorch backend. Shuffling, batching and augmentation are left to the
training pipeline.

    from keras_smallvit import data

    train, info = data.load_dataset("cifar100", "train")
    train = train.shuffle(10_000).batch(128)
    model = keras_smallvit.create_model("sl_vit", num_classes=info.num_classes,
                                        image_size=info.image_size)

Supported names: `"digits"` (scikit-learn, offline), `"cifar10"`,
`"cifar100"`, `"svhn_cropped"` (TensorFlow Datasets, prepared beforehand),
`"tiny_imagenet"` (the unpacked official `tiny-imagenet-200.zip`) and
`"folder:<path>"` (an ImageFolder-style directory).

TensorFlow and TensorFlow Datasets are imported inside the functions: they
are slow to import and only the data pipeline needs them. `check_data`
checks that a dataset is on disk without them.
"""

import dataclasses
import os

import numpy as np

from keras_smallvit.images import RESIZE_POLICIES
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

SPLITS = ("train", "test")
TFDS_NAMES = ("cifar10", "cifar100", "svhn_cropped")
DATASET_NAMES = ("digits",) + TFDS_NAMES + ("tiny_imagenet", "folder:<path>")
FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# The resolutions the papers train at for each dataset.
DEFAULT_IMAGE_SIZES = {
    "digits": 32,
    "cifar10": 32,
    "cifar100": 32,
    "svhn_cropped": 32,
    "tiny_imagenet": 64,
}

TINY_IMAGENET_LAYOUT = """\
  <data_dir>/wnids.txt                       one class id (wnid) per line
  <data_dir>/train/<wnid>/images/*.JPEG      training images
  <data_dir>/val/images/*.JPEG               validation images (our "test" split)
  <data_dir>/val/val_annotations.txt         filename<TAB>wnid<TAB>x<TAB>y<TAB>w<TAB>h
(the layout http://cs231n.stanford.edu/tiny-imagenet-200.zip unpacks to;
`data_dir` may also be the folder that contains `tiny-imagenet-200/`)"""

FOLDER_LAYOUT = """\
  <path>/train/<class_name>/*.{jpg,jpeg,png}
  <path>/test/<class_name>/*.{jpg,jpeg,png}   (or <path>/val/...)
(classes are the sub-folders of train/, sorted alphabetically)"""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a training script needs to know about a loaded dataset.

    Attributes:
        name: The dataset name as passed to `load_dataset`.
        num_classes: Number of classes; labels are in `[0, num_classes)`.
        image_size: Side of the square images the pipeline yields.
        num_train: Number of training examples, or `None` if unknown.
        num_test: Number of test examples, or `None` if unknown.
        class_names: The name of each class, in label order (TFDS's names,
            Tiny-ImageNet's words with the wnid, folder names, digits "0"-"9").
    """

    name: str
    num_classes: int
    image_size: int
    num_train: int | None
    num_test: int | None
    class_names: tuple = None


def default_image_size(name):
    """Returns the image size the papers use for dataset `name`.

    Args:
        name: One of the names `load_dataset` accepts.

    Returns:
        The side in pixels, or `None` for `"folder:<path>"`, whose images are
        kept at the size of the first image found.
    """
    if name.startswith(FOLDER_PREFIX):
        return None
    _check_name(name)
    return DEFAULT_IMAGE_SIZES[name]


def load_dataset(name, split, image_size=None, data_dir=None, resize="squash"):
    """Loads one split of a dataset as a `tf.data.Dataset` of `(image, label)`.

    Args:
        name: `"digits"`, `"cifar10"`, `"cifar100"`, `"svhn_cropped"`,
            `"tiny_imagenet"` or `"folder:<path>"`.
        split: `"train"` or `"test"` (for Tiny ImageNet, `"test"` is the
            official validation set, whose labels are public).
        image_size: Side of the square output images; images are resized
            (bilinear, by `resize`) when it differs from the stored size. Defaults to
            `default_image_size(name)`.
        data_dir: Where the data lives: the TFDS data directory for the TFDS
            names (TFDS's default when `None`), the unpacked
            `tiny-imagenet-200` folder for `"tiny_imagenet"` (required).
            Ignored for `"digits"` and `"folder:<path>"`.
        resize: how images of another size or shape are brought to
            `image_size`: a policy of `keras_smallvit.images.RESIZE_POLICIES`
            ("squash", "crop" or "pad"). Ignored for `"digits"` (square).

    Returns:
        A tuple `(dataset, info)`: an unbatched, prefetched `tf.data.Dataset`
        of float32 images in [0, 1] of shape `(image_size, image_size, 3)` and
        int32 labels, and a `DatasetInfo`.

    Raises:
        ValueError: If `name`, `split` or `image_size` is invalid.
        FileNotFoundError: If the data is not on disk. Nothing is ever
            downloaded.
    """
    check_choice("split", split, SPLITS)
    check_choice("resize", resize, RESIZE_POLICIES)
    if image_size is not None:
        image_size = check_positive_int("image_size", image_size)
    if name.startswith(FOLDER_PREFIX):
        return _load_folder(name, name[len(FOLDER_PREFIX):], split, image_size, resize)
    _check_name(name)
    if image_size is None:
        image_size = DEFAULT_IMAGE_SIZES[name]
    if name == "digits":
        return load_digits(image_size=image_size, split=split)
    if name == "tiny_imagenet":
        return _load_tiny_imagenet(split, image_size, data_dir, resize)
    return _load_tfds(name, split, image_size, data_dir, resize)


def check_data(name, data_dir=None):
    """Raises the error `load_dataset` would raise for data that is not on
    disk, without importing TensorFlow (fast: the command line's check).

    It runs the loaders' own layout checks on the local file system (both
    splits). What it cannot see without TensorFlow is left to
    `load_dataset`, so it never rejects data that `load_dataset` accepts:
    images that do not decode, paths such as `gs://...`, and for the TFDS
    names anything inside the prepared `<data_dir>/<name>/` folder.

    Args:
        name: A name `load_dataset` accepts.
        data_dir: As in `load_dataset`.

    Raises:
        ValueError: If `name` is invalid, or a folder's classes disagree.
        FileNotFoundError: If the data is not on disk (the loader's message).
    """
    if name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX):]
        if not _is_remote(root):
            for split in SPLITS:
                _folder_examples(name, root, split, _LocalFiles)
        return
    _check_name(name)
    if name == "tiny_imagenet":
        if data_dir is None or not _is_remote(data_dir):
            _, _, (test_paths, _) = _tiny_imagenet_examples(data_dir, _LocalFiles)
            _check_first_test_image(test_paths, _LocalFiles)
    elif name in TFDS_NAMES:
        where = data_dir if data_dir is not None else _tfds_data_dir()
        folder = os.path.join(where, name)
        # TFDS reads <data_dir>/<name>/<version>/: without that folder, no version is there.
        if not _is_remote(where) and not any(os.path.isdir(p) for p in (folder, os.path.expanduser(folder))):
            raise _tfds_not_prepared(name, where, folder)


def load_digits(image_size=32, split="train", test_fraction=0.2, seed=0):
    """scikit-learn's 1,797 8x8 handwritten digits as RGB images.

    Offline: the data ships with scikit-learn. The split is a seeded random
    permutation (the split `training.train` uses for digits), so a given `seed` and
    `test_fraction` always give the same disjoint train and test sets.

    Args:
        image_size: Output side. Multiples of 8 repeat each pixel (nearest
            neighbour, keeps the strokes sharp); other sizes are bilinear.
        split: `"train"` or `"test"`.
        test_fraction: Fraction of the examples held out for `"test"`, in
            (0, 1).
        seed: Seed of the train/test permutation.

    Returns:
        A tuple `(dataset, info)` as in `load_dataset`.
    """
    import tensorflow as tf
    from sklearn.datasets import load_digits as sklearn_load_digits

    image_size = check_positive_int("image_size", image_size)
    check_choice("split", split, SPLITS)
    check_range("test_fraction", test_fraction, 0, 1, low_inclusive=False, high_inclusive=False)

    digits = sklearn_load_digits()
    images = digits.images.astype("uint8")  # values 0..16: exact in uint8
    labels = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(images))
    num_train = int(len(images) * (1 - test_fraction))
    indices = order[:num_train] if split == "train" else order[num_train:]

    factor, remainder = divmod(image_size, 8)

    def preprocess(image, label):
        image = tf.cast(image, tf.float32)[..., None] / 16.0
        if remainder == 0:
            image = tf.repeat(tf.repeat(image, factor, axis=0), factor, axis=1)
        else:
            image = tf.image.resize(image, (image_size, image_size), method="bilinear")
            image = tf.clip_by_value(image, 0.0, 1.0)
        return tf.tile(image, (1, 1, 3)), label

    dataset = tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))
    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        image_size=image_size,
        num_train=num_train,
        num_test=len(images) - num_train,
        class_names=tuple(str(i) for i in range(10)),
    )
    return dataset.prefetch(tf.data.AUTOTUNE), info


def _check_name(name):
    if name not in DEFAULT_IMAGE_SIZES:
        check_choice("name", name, DATASET_NAMES)


def _to_float_image(image, image_size, resize="squash"):
    """uint8 (or float in [0, 1]) image of any size -> float32 in [0, 1], resized."""
    import tensorflow as tf

    from keras_smallvit.images import resize_float_images

    image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]
    image.set_shape((None, None, 3))
    image = tf.clip_by_value(resize_float_images(image, (image_size, image_size), resize), 0.0, 1.0)
    image.set_shape((image_size, image_size, 3))
    return image


def _load_tfds(name, split, image_size, data_dir, resize="squash"):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    try:
        # What `tfds.load(name, split=split, data_dir=data_dir, download=False,
        # as_supervised=True)` does, keeping `builder` for the error message
        # and the metadata. It never touches the network.
        dataset = builder.as_dataset(split=split, as_supervised=True)
    except AssertionError as error:  # TFDS's "could not find data in ..."
        where = data_dir if data_dir is not None else builder.data_dir.rsplit(os.sep + name, 1)[0]
        raise _tfds_not_prepared(name, where, builder.data_dir) from error

    def preprocess(image, label):
        return _to_float_image(image, image_size, resize), tf.cast(label, tf.int32)

    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    splits = builder.info.splits  # empty under `tfds.testing.mock_data`
    label_feature = builder.info.features["label"]
    info = DatasetInfo(
        name=name,
        num_classes=label_feature.num_classes,
        class_names=tuple(label_feature.names),
        image_size=image_size,
        num_train=splits["train"].num_examples if "train" in splits else None,
        num_test=splits["test"].num_examples if "test" in splits else None,
    )
    return dataset.prefetch(tf.data.AUTOTUNE), info


def _tfds_not_prepared(name, where, looked_for):
    return FileNotFoundError(
        f"TensorFlow Datasets' `{name}` is not prepared under data_dir={where!r} "
        f"(looked for {looked_for}). Nothing is downloaded here. Prepare it "
        "on a machine with internet access:\n"
        f"  python -c \"import tensorflow_datasets as tfds; "
        f"tfds.load('{name}', data_dir='{where}')\"\n"
        f"then copy the folder `{where}/{name}` here and pass that `data_dir` "
        "(or set TFDS_DATA_DIR)."
    )


def _tfds_data_dir():
    """The data dir TFDS reads when given none (`tfds.core.constants.DATA_DIR`)."""
    default = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", default))


def _files_dataset(paths, labels, image_size, resize="squash"):
    """Decodes image files (JPEG or PNG, grayscale or RGB) into the common format."""
    import tensorflow as tf

    def preprocess(path, label):
        # channels=3: Tiny ImageNet and many folders mix grayscale and RGB files.
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return _to_float_image(image, image_size, resize), label

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int32))
    )
    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


class _LocalFiles:
    """The `tf.io.gfile` calls of this module on `os`, for local paths: the
    loaders' layout checks without importing TensorFlow (`check_data`)."""

    exists = staticmethod(os.path.exists)
    isdir = staticmethod(os.path.isdir)
    listdir = staticmethod(os.listdir)

    @staticmethod
    def GFile(path):  # noqa: N802 (tf.io.gfile's name)
        return open(path, encoding="utf-8", errors="replace")


def _gfile(files):
    if files is not None:
        return files
    import tensorflow as tf

    return tf.io.gfile


def _is_remote(path):
    """A path only `tf.io.gfile` reads (gs://, s3://, ...)."""
    return "://" in str(path)


def _missing(what, path, layout):
    return FileNotFoundError(f"{what}: {path!r} does not exist. Expected layout:\n{layout}")


def _resolve_tiny_imagenet_dir(data_dir, files=None):
    files = _gfile(files)
    if data_dir is None:
        raise FileNotFoundError(
            "`tiny_imagenet` needs `data_dir`: the unpacked tiny-imagenet-200 folder "
            f"(nothing is downloaded). Expected layout:\n{TINY_IMAGENET_LAYOUT}"
        )
    nested = os.path.join(data_dir, "tiny-imagenet-200")
    if not files.exists(os.path.join(data_dir, "wnids.txt")) and files.exists(nested):
        data_dir = nested  # the folder the zip was unpacked into
    for relative in ("wnids.txt", "train", os.path.join("val", "val_annotations.txt")):
        path = os.path.join(data_dir, relative)
        if not files.exists(path):
            raise _missing("Tiny ImageNet not found", path, TINY_IMAGENET_LAYOUT)
    return data_dir


def _read_lines(path, files=None):
    with _gfile(files).GFile(path) as f:
        return [line.strip() for line in f if line.strip()]


def _list_images(directory, layout, files=None):
    files = _gfile(files)
    if not files.isdir(directory):
        raise _missing("Image folder not found", directory, layout)
    return sorted(
        os.path.join(directory, f)
        for f in files.listdir(directory)
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )


def _tiny_imagenet_examples(data_dir, files=None):
    """`(wnids, (train_paths, train_labels), (test_paths, test_labels))`,
    with the layout checks of the loader."""
    root = _resolve_tiny_imagenet_dir(data_dir, files)
    # Sorted like an ImageFolder over train/, so labels match other tools.
    wnids = sorted(_read_lines(os.path.join(root, "wnids.txt"), files))
    if not wnids:
        raise ValueError(f"{os.path.join(root, 'wnids.txt')} lists no classes.")
    label_of = {wnid: i for i, wnid in enumerate(wnids)}

    def train_examples():
        paths, labels = [], []
        for wnid in wnids:
            images_dir = os.path.join(root, "train", wnid, "images")
            for path in _list_images(images_dir, TINY_IMAGENET_LAYOUT, files):
                paths.append(path)
                labels.append(label_of[wnid])
        return paths, labels

    def test_examples():
        # val/images/ is flat; the labels are only in the annotations file.
        paths, labels = [], []
        annotations = os.path.join(root, "val", "val_annotations.txt")
        for line in _read_lines(annotations, files):
            filename, wnid = line.split("\t")[:2]
            if wnid not in label_of:
                raise ValueError(f"{annotations}: class {wnid!r} of {filename!r} is not in wnids.txt.")
            paths.append(os.path.join(root, "val", "images", filename))
            labels.append(label_of[wnid])
        return paths, labels

    return wnids, train_examples(), test_examples()


def _check_first_test_image(test_paths, files=None):
    # Check one file up front: a missing val/images/ would otherwise only
    # fail mid-epoch, deep inside tf.data.
    if test_paths and not _gfile(files).exists(test_paths[0]):
        raise _missing("Tiny ImageNet validation image not found", test_paths[0], TINY_IMAGENET_LAYOUT)


def _tiny_imagenet_class_names(data_dir, wnids):
    """`"goldfish (n01443537)"`: the first word of each wnid in the archive's
    `words.txt` with the wnid (unique even where two words agree), or the
    wnid alone without that file."""
    import tensorflow as tf

    words_file = os.path.join(_resolve_tiny_imagenet_dir(data_dir), "words.txt")
    if not tf.io.gfile.exists(words_file):
        return tuple(wnids)
    words = {}
    for line in _read_lines(words_file):
        wnid, _, text = line.partition("\t")
        words[wnid] = text.split(",")[0].strip()
    return tuple(f"{words[w]} ({w})" if words.get(w) else w for w in wnids)


def _load_tiny_imagenet(split, image_size, data_dir, resize="squash"):
    wnids, (train_paths, train_labels), (test_paths, test_labels) = _tiny_imagenet_examples(data_dir)
    if split == "test":
        _check_first_test_image(test_paths)
    paths, labels = (train_paths, train_labels) if split == "train" else (test_paths, test_labels)
    info = DatasetInfo(
        name="tiny_imagenet",
        num_classes=len(wnids),
        class_names=_tiny_imagenet_class_names(data_dir, wnids),
        image_size=image_size,
        num_train=len(train_paths),
        num_test=len(test_paths),
    )
    return _files_dataset(paths, labels, image_size, resize), info


def folder_image_size(name, sample=64):
    """The typical image side of a `"folder:<path>"` dataset's train split.

    Args:
        name: `"folder:<path>"`.
        sample: how many images (evenly spread over the sorted files) are
            decoded to measure it.

    Returns:
        The median of the sampled images' shorter sides, in pixels.
    """
    import tensorflow as tf

    root = name[len(FOLDER_PREFIX):]
    train_dir = _folder_split_dir(root, "train")
    if train_dir is None:
        raise _missing("Image folder split 'train' not found", os.path.join(root, "train"), FOLDER_LAYOUT)
    paths = []
    for entry in sorted(tf.io.gfile.listdir(train_dir)):
        if tf.io.gfile.isdir(os.path.join(train_dir, entry)):
            paths += _list_images(os.path.join(train_dir, entry.rstrip("/")), FOLDER_LAYOUT)
    if not paths:
        raise _missing("No .jpg/.jpeg/.png images", os.path.join(train_dir, "<class_name>"), FOLDER_LAYOUT)
    picks = sorted(set(np.linspace(0, len(paths) - 1, min(sample, len(paths))).astype(int)))
    sides = []
    for i in picks:
        try:
            image = tf.io.decode_image(tf.io.read_file(paths[i]), channels=3, expand_animations=False)
        except tf.errors.OpError as error:
            raise ValueError(f"Cannot decode image {paths[i]!r}: {error.message}") from None
        sides.append(min(int(image.shape[0]), int(image.shape[1])))
    return int(np.median(sides))


def find_unreadable_image(name, split, data_dir=None):
    """The first image file of a file-based dataset's split that does not
    decode, or None (for the datasets that are not files, or when all decode).
    Slow (one eager decode per file): for error messages only."""
    import tensorflow as tf

    if name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX):]
        split_dir = _folder_split_dir(root, split)
        if split_dir is None:
            return None
        paths = [
            path
            for entry in sorted(tf.io.gfile.listdir(split_dir))
            if tf.io.gfile.isdir(os.path.join(split_dir, entry))
            for path in _list_images(os.path.join(split_dir, entry.rstrip("/")), FOLDER_LAYOUT)
        ]
    elif name == "tiny_imagenet":
        root = _resolve_tiny_imagenet_dir(data_dir)
        if split == "train":
            paths = [p for wnid in _read_lines(os.path.join(root, "wnids.txt"))
                     for p in _list_images(os.path.join(root, "train", wnid, "images"), TINY_IMAGENET_LAYOUT)]
        else:
            images_dir = os.path.join(root, "val", "images")
            paths = [os.path.join(images_dir, line.split("\t")[0])
                     for line in _read_lines(os.path.join(root, "val", "val_annotations.txt"))]
    else:
        return None
    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.OpError:
            return path
    return None


def _folder_split_dir(root, split, files=None):
    files = _gfile(files)
    candidates = ("train",) if split == "train" else ("test", "val")
    for candidate in candidates:
        path = os.path.join(root, candidate)
        if files.isdir(path):
            return path
    return None


def _folder_examples(name, root, split, files=None):
    """`(class_names, paths, labels, num_other)` of a folder's split
    (`num_other`: the other split's examples, None without one), with the
    layout checks of the loader."""
    files = _gfile(files)
    if not root:
        raise ValueError(f"Invalid `name`: {name!r}. Expected 'folder:<path>' with a non-empty path.")
    split_dir = _folder_split_dir(root, split, files)
    if split_dir is None:
        raise _missing(f"Image folder split {split!r} not found", os.path.join(root, split), FOLDER_LAYOUT)

    def class_names(directory):
        return sorted(
            entry.rstrip("/")
            for entry in files.listdir(directory)
            if files.isdir(os.path.join(directory, entry))
        )

    # Classes come from train/ whatever the split, so labels agree between splits.
    train_dir = _folder_split_dir(root, "train", files)
    classes = class_names(train_dir or split_dir)
    if not classes:
        raise _missing("No class sub-folders", os.path.join(train_dir or split_dir, "<class_name>"), FOLDER_LAYOUT)

    def examples(directory):
        paths, labels = [], []
        for class_name in class_names(directory):
            if class_name not in classes:
                raise ValueError(f"{directory}: class folder {class_name!r} is not among the classes of train/.")
            for path in _list_images(os.path.join(directory, class_name), FOLDER_LAYOUT, files):
                paths.append(path)
                labels.append(classes.index(class_name))
        return paths, labels

    paths, labels = examples(split_dir)
    if not paths:
        raise _missing("No .jpg/.jpeg/.png images", os.path.join(split_dir, "<class_name>"), FOLDER_LAYOUT)
    other_dir = _folder_split_dir(root, "test" if split == "train" else "train", files)
    num_other = len(examples(other_dir)[0]) if other_dir else None
    return classes, paths, labels, num_other


def _load_folder(name, root, split, image_size, resize="squash"):
    import tensorflow as tf

    classes, paths, labels, num_other = _folder_examples(name, root, split)
    if image_size is None:
        # No paper default for an arbitrary folder: keep the first image's size
        # (square side = its height) so that every example has one shape.
        first = tf.io.decode_image(tf.io.read_file(paths[0]), channels=3, expand_animations=False)
        image_size = int(first.shape[0])
    info = DatasetInfo(
        name=name,
        num_classes=len(classes),
        class_names=tuple(classes),
        image_size=image_size,
        num_train=len(paths) if split == "train" else num_other,
        num_test=len(paths) if split == "test" else num_other,
    )
    return _files_dataset(paths, labels, image_size, resize), info
