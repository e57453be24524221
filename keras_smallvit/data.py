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
`"cifar100"`, `"svhn_cropped"`, `"caltech_birds2011"`, `"oxford_flowers102"`
and `"imagenet2012"` (TensorFlow Datasets, prepared beforehand; ImageNet
from the manually downloaded archives, see `IMAGENET_MANUAL_FILES`),
`"tiny_imagenet"` (the unpacked official `tiny-imagenet-200.zip`) and
`"folder:<path>"` (an ImageFolder-style directory). `class_balanced_subset`
picks the seeded, class-balanced share of a training split that
`TrainConfig.subset_ratio` trains on (the AAL paper's ImageNet subsets).

TensorFlow and TensorFlow Datasets are imported inside the functions: they
are slow to import and only the data pipeline needs them. `check_data`
checks that a dataset is on disk without them.
"""

import dataclasses
import os

import numpy as np

from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.image_folder import FOLDER_LAYOUT  # noqa: F401 (part of this module's API)
from keras_smallvit.image_folder import FolderSplit
from keras_smallvit.image_folder import folder_layout
from keras_smallvit.image_folder import scan_split
from keras_smallvit.images import IMAGE_EXTENSIONS
from keras_smallvit.images import RESIZE_POLICIES
from keras_smallvit.utils.validation import check_range

SPLITS = ("train", "test")
# A folder with both val/ and test/ serves three.
FOLDER_SPLITS = ("train", "val", "test")
TFDS_NAMES = ("cifar10", "cifar100", "svhn_cropped", "caltech_birds2011", "oxford_flowers102", "imagenet2012")
# Our "train" / "test" in TFDS's split names where they differ: ImageNet's
# labelled validation set is the test split of every paper; Flowers-102
# trains on train + validation (1,020 + 1,020 images), as ViT and DeiT do.
TFDS_SPLITS = {
    "imagenet2012": {"train": "train", "test": "validation"},
    "oxford_flowers102": {"train": "train+validation", "test": "test"},
}
# ImageNet cannot be downloaded by TFDS: the archives come from image-net.org
# (registration), placed in TFDS's manual folder before the one preparation.
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
DATASET_NAMES = ("digits",) + TFDS_NAMES + ("tiny_imagenet", "folder:<path>")
FOLDER_PREFIX = "folder:"

# The resolutions the papers train at for each dataset.
DEFAULT_IMAGE_SIZES = {
    "digits": 32,
    "cifar10": 32,
    "cifar100": 32,
    "svhn_cropped": 32,
    "tiny_imagenet": 64,
    "caltech_birds2011": 224,
    "oxford_flowers102": 224,
    "imagenet2012": 224,
}

TINY_IMAGENET_LAYOUT = """\
  <data_dir>/wnids.txt                       one class id (wnid) per line
  <data_dir>/train/<wnid>/images/*.JPEG      training images
  <data_dir>/val/images/*.JPEG               validation images (our "test" split)
  <data_dir>/val/val_annotations.txt         filename<TAB>wnid<TAB>x<TAB>y<TAB>w<TAB>h
(the layout http://cs231n.stanford.edu/tiny-imagenet-200.zip unpacks to;
`data_dir` may also be the folder that contains `tiny-imagenet-200/`)"""

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


def load_dataset(name, split, image_size=None, data_dir=None, resize="squash", indices=None):
    """Loads one split of a dataset as a `tf.data.Dataset` of `(image, label)`.

    Args:
        name: `"digits"`, `"cifar10"`, `"cifar100"`, `"svhn_cropped"`,
            `"tiny_imagenet"` or `"folder:<path>"`.
        split: `"train"` or `"test"` (for Tiny ImageNet, `"test"` is the
            official validation set, whose labels are public; for a folder,
            its val/ or test/ folder). A folder with both val/ and test/ has
            `"val"` too. A single folder of classes has `"train"` only (see
            `evaluation_splits`).
        image_size: Side of the square output images; images are resized
            (bilinear, antialiased, by `resize`) when it differs from the stored size.
            Defaults to `default_image_size(name)`.
        data_dir: Where the data lives: the TFDS data directory for the TFDS
            names (TFDS's default when `None`), the unpacked
            `tiny-imagenet-200` folder for `"tiny_imagenet"` (required).
            Ignored for `"digits"` and `"folder:<path>"`.
        resize: how images of another size or shape are brought to
            `image_size`: a policy of `keras_smallvit.images.RESIZE_POLICIES`
            ("squash", "crop" or "pad"). Ignored for `"digits"` (square).
        indices: None (every example), or the positions of the examples to
            keep in the split's stored order (sorted; e.g. from
            `class_balanced_subset`). For the TFDS names only the kept
            images are decoded.

    Returns:
        A tuple `(dataset, info)`: an unbatched, prefetched `tf.data.Dataset`
        of float32 images in [0, 1] of shape `(image_size, image_size, 3)` and
        int32 labels, and a `DatasetInfo`.

    Raises:
        ValueError: If `name`, `split` or `image_size` is invalid.
        FileNotFoundError: If the data is not on disk. Nothing is ever
            downloaded.
    """
    check_choice("split", split, FOLDER_SPLITS if name.startswith(FOLDER_PREFIX) else SPLITS)
    check_choice("resize", resize, RESIZE_POLICIES)
    if image_size is not None:
        image_size = check_positive_int("image_size", image_size)
    if name.startswith(FOLDER_PREFIX):
        return _load_folder(name, split, image_size, resize)
    _check_name(name)
    if image_size is None:
        image_size = DEFAULT_IMAGE_SIZES[name]
    if name in TFDS_NAMES:
        return _load_tfds(name, split, image_size, data_dir, resize, indices)
    if name == "digits":
        dataset, info = load_digits(image_size=image_size, split=split)
    else:
        found, info = split_files(name, split, data_dir)
        info = dataclasses.replace(info, image_size=image_size)
        dataset = _files_dataset(found.paths, found.labels, image_size, resize)
    return (dataset if indices is None else select_examples(dataset, indices)), info


def check_data(name, data_dir=None, validation_split=None):
    """Raises the error `load_dataset` would raise for data that is not on
    disk, without importing TensorFlow (fast: the command line's check).

    It runs the loaders' own layout checks on the local file system (every
    split, and `evaluation_splits`). What it cannot see without TensorFlow is left to
    `load_dataset`, so it never rejects data that `load_dataset` accepts:
    images that do not decode, paths such as `gs://...`, and for the TFDS
    names anything inside the prepared `<data_dir>/<name>/` folder.

    Args:
        name: A name `load_dataset` accepts.
        data_dir: As in `load_dataset`.
        validation_split: As in `evaluation_splits`.

    Raises:
        ValueError: If `name` is invalid, or a folder cannot be right (see
            `keras_smallvit.image_folder`).
        FileNotFoundError: If the data is not on disk (the loader's message).
    """
    if name.startswith(FOLDER_PREFIX):
        if not _is_remote(_folder_root(name)):
            train = _folder_split(name, "train", _LocalFiles)
            for split in _folder_splits(name, _LocalFiles)[1:]:
                _folder_split(name, split, _LocalFiles, train=train)
            evaluation_splits(name, validation_split, files=_LocalFiles)
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
    """uint8 (or float in [0, 1]) image of any size -> float32 in [0, 1],
    resized by the `resize` policy."""
    import tensorflow as tf

    from keras_smallvit.images import resize_float_images

    image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]
    image.set_shape((None, None, 3))
    image = tf.clip_by_value(resize_float_images(image, (image_size, image_size), resize), 0.0, 1.0)
    image.set_shape((image_size, image_size, 3))
    return image


def _load_tfds(name, split, image_size, data_dir, resize="squash", indices=None):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    # With `indices`, the images are decoded after the selection (a 5 %
    # subset of ImageNet decodes 5 % of its images).
    decoders = None if indices is None else {"image": tfds.decode.SkipDecoding()}
    try:
        # What `tfds.load(name, split=split, data_dir=data_dir, download=False,
        # as_supervised=True)` does, keeping `builder` for the error message
        # and the metadata. It never touches the network.
        dataset = builder.as_dataset(
            split=TFDS_SPLITS.get(name, {}).get(split, split), as_supervised=True, decoders=decoders
        )
    except AssertionError as error:  # TFDS's "could not find data in ..."
        where = data_dir if data_dir is not None else builder.data_dir.rsplit(os.sep + name, 1)[0]
        raise _tfds_not_prepared(name, where, builder.data_dir) from error
    if indices is not None:
        dataset = select_examples(dataset, indices)
        if dataset.element_spec[0].dtype == tf.string:  # encoded: decode the kept ones
            image_feature = builder.info.features["image"]
            dataset = dataset.map(lambda image, label: (image_feature.decode_example(image), label))

    def preprocess(image, label):
        return _to_float_image(image, image_size, resize), tf.cast(label, tf.int32)

    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), _tfds_info(name, builder, image_size)


def select_examples(dataset, indices):
    """The examples of `dataset` at the positions `indices` (in its order)."""
    import tensorflow as tf

    indices = np.asarray(indices, dtype=np.int64)
    keep = np.zeros(int(indices.max()) + 1 if len(indices) else 0, dtype=bool)
    keep[indices] = True
    keep = tf.constant(keep)
    dataset = dataset.enumerate().take(len(keep))  # nothing after the last kept one is read
    return dataset.filter(lambda i, example: keep[i]).map(lambda i, example: example)


def _tfds_info(name, builder, image_size):
    splits = builder.info.splits  # empty under `tfds.testing.mock_data`
    label_feature = builder.info.features["label"]

    def count(split):
        parts = TFDS_SPLITS.get(name, {}).get(split, split).split("+")
        return sum(splits[p].num_examples for p in parts) if all(p in splits for p in parts) else None

    return DatasetInfo(
        name=name,
        num_classes=label_feature.num_classes,
        class_names=tuple(label_feature.names),
        image_size=image_size,
        num_train=count("train"),
        num_test=count("test"),
    )


def load_labels(name, split, data_dir=None):
    """The labels of a TFDS split in its stored order, as an int32 array,
    without decoding an image (what `class_balanced_subset` needs before the
    images of a large split are read).

    Args:
        name: one of `TFDS_NAMES`.
        split: `"train"` or `"test"`.
        data_dir: as in `load_dataset`.
    """
    import tensorflow_datasets as tfds

    check_choice("name", name, TFDS_NAMES)
    check_choice("split", split, SPLITS)
    builder = tfds.builder(name, data_dir=data_dir)
    try:
        dataset = builder.as_dataset(
            split=TFDS_SPLITS.get(name, {}).get(split, split), decoders={"image": tfds.decode.SkipDecoding()}
        )
    except AssertionError as error:
        where = data_dir if data_dir is not None else builder.data_dir.rsplit(os.sep + name, 1)[0]
        raise _tfds_not_prepared(name, where, builder.data_dir) from error
    labels = [batch for batch in dataset.map(lambda example: example["label"]).batch(65536).as_numpy_iterator()]
    return np.concatenate(labels).astype("int32") if labels else np.zeros((0,), "int32")


def class_balanced_subset(labels, ratio, seed=0, num_classes=None):
    """The sorted indices of a class-balanced share `ratio` of `labels`:
    `max(1, round(ratio * n_c))` examples of each class of `n_c` (every
    class keeps at least one), drawn by a permutation seeded by
    `(seed, class)`. Pure NumPy: the same subset on every backend, for any
    run seed, on resume and whether the images are read into memory or
    streamed (both call this on the split's labels in its stored order).

    Args:
        labels: int labels `(N,)` in the split's stored order.
        ratio: the share to keep, in (0, 1].
        seed: the subset's seed (`TrainConfig.subset_seed`).
        num_classes: the number of classes (default `max(labels) + 1`).
    """
    check_range("ratio", ratio, 0.0, 1.0, low_inclusive=False)
    labels = np.asarray(labels)
    if ratio == 1.0:
        return np.arange(len(labels))
    num_classes = int(labels.max()) + 1 if num_classes is None and len(labels) else (num_classes or 0)
    kept = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        if not len(members):
            continue
        count = max(1, int(round(ratio * len(members))))
        order = np.random.default_rng([seed, label]).permutation(len(members))
        kept.append(members[order[:count]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros((0,), dtype=np.int64)


def _tfds_not_prepared(name, where, looked_for):
    if name == "imagenet2012":
        manual = os.path.join(where, "downloads", "manual")
        present = [f for f in IMAGENET_MANUAL_FILES if os.path.isfile(os.path.join(manual, f))]
        missing = [f for f in IMAGENET_MANUAL_FILES if f not in present]
        state = (
            f"Both archives are in {manual}: prepare it once (no download; hours):"
            if not missing
            else f"Missing in {manual}: {', '.join(missing)}. TFDS cannot download ImageNet: register at "
            "https://image-net.org/download-images, download "
            f"{' and '.join(IMAGENET_MANUAL_FILES)} and put them in {manual} (TFDS's manual_dir), then prepare it "
            "once (no network needed; hours):"
        )
        return FileNotFoundError(
            f"TensorFlow Datasets' `imagenet2012` is not prepared under data_dir={where!r} (looked for "
            f"{looked_for}). {state}\n"
            f"  python -c \"import tensorflow_datasets as tfds; tfds.load('imagenet2012', data_dir='{where}')\"\n"
            "(or `tfds build imagenet2012 --data_dir=... --manual_dir=...`), then pass that `data_dir` "
            "(or set TFDS_DATA_DIR)."
        )
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
    """Decodes image files (`IMAGE_EXTENSIONS`, grayscale or RGB) into the common format."""
    import tensorflow as tf

    from keras_smallvit.images import decode_image_graph

    def preprocess(path, label):
        # 3 channels: Tiny ImageNet and many folders mix grayscale and RGB files.
        return _to_float_image(decode_image_graph(path), image_size, resize), label

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


def folder_image_size(name, sample=64):
    """The typical image side of a `"folder:<path>"` dataset's train split.

    Args:
        name: `"folder:<path>"`.
        sample: how many images (evenly spread over the sorted files) are
            decoded to measure it.

    Returns:
        The median of the sampled images' shorter sides, in pixels (images
        that do not decode are left out here; loading names them).
    """
    from keras_smallvit.images import decode_image_file

    paths = _folder_split(name, "train").paths
    picks = sorted(set(np.linspace(0, len(paths) - 1, min(sample, len(paths))).astype(int)))
    sides = []
    for i in picks:
        try:
            image = decode_image_file(paths[i])
        except ValueError:
            continue
        sides.append(min(image.shape[0], image.shape[1]))
    if not sides:
        raise ValueError(f"None of {len(picks)} sampled images of {name!r} decodes: check the files.")
    return int(np.median(sides))


def evaluation_splits(name, validation_split=None, data_dir=None, files=None):
    """`(selection, report)`: the split whose accuracy picks the best epoch,
    and the split evaluated at the end of a run (the same one unless the
    data has both a validation and a test split).

    - `validation_split` given: "val" is held out of train (stratified per
      class, `keras_smallvit.training.pipeline.hold_out_validation`); the
      report is "test" where the dataset has one, else "val".
    - a folder with both val/ and test/: `("val", "test")`.
    - otherwise: `("test", "test")` (a folder's only held-out folder, val/
      or test/, is its "test" split).

    Raises:
        ValueError: one folder of classes without `validation_split`, or
            `validation_split` with a folder that has val/ already.
    """
    if not name.startswith(FOLDER_PREFIX):
        return ("val", "test") if validation_split else ("test", "test")
    root = _folder_root(name)
    if _is_remote(root) and files is None:
        files = _gfile(None)
    splits = folder_layout(root, files or _LocalFiles)
    held_out = sorted(set(splits) - {"train"})
    if validation_split:
        if "val" in splits:
            raise ValueError(
                f"Invalid `validation_split` {validation_split}: {root!r} has a val/ folder already. "
                "Use one of the two: remove validation_split, or the val/ folder."
            )
        return "val", ("test" if "test" in splits else "val")
    if not held_out:
        raise _no_held_out_split(root, splits)
    return ("val", "test") if len(held_out) == 2 else ("test", "test")


def split_files(name, split, data_dir=None):
    """`(FolderSplit, DatasetInfo)` of a file-based dataset's split (a
    folder, Tiny ImageNet), or None for the others: the files to decode."""
    if name.startswith(FOLDER_PREFIX):
        train = _folder_split(name, "train")  # scanned once: its classes label every split
        found = train if split == "train" else _folder_split(name, split, train=train)
        if split != "train":
            num_test = len(found.paths)
        else:
            has_test = "test" in _folder_splits(name)
            num_test = len(_folder_split(name, "test", train=train).paths) if has_test else None
        info = DatasetInfo(
            name=name,
            num_classes=len(found.class_names),
            class_names=tuple(found.class_names),
            image_size=None,
            num_train=len(train.paths),
            num_test=num_test,
        )
        return found, info
    if name == "tiny_imagenet":
        wnids, (train_paths, train_labels), (test_paths, test_labels) = _tiny_imagenet_examples(data_dir)
        if split == "test":
            _check_first_test_image(test_paths)
        paths, labels = (train_paths, train_labels) if split == "train" else (test_paths, test_labels)
        info = DatasetInfo(
            name="tiny_imagenet",
            num_classes=len(wnids),
            class_names=_tiny_imagenet_class_names(data_dir, wnids),
            image_size=None,
            num_train=len(train_paths),
            num_test=len(test_paths),
        )
        root = _resolve_tiny_imagenet_dir(data_dir)
        where = os.path.join(root, "train" if split == "train" else "val")
        return FolderSplit(where, tuple(wnids), paths, labels, {}), info
    return None


def read_image_files(paths, labels, image_size, resize="squash", progress=None, workers=None):
    """Decodes and resizes image files in parallel into memory, going on
    past the files that fail.

    Args:
        paths: the image files.
        labels: their labels.
        image_size: the side of the square output.
        resize: the resize policy (`keras_smallvit.images.RESIZE_POLICIES`).
        progress: called with the number of images done after each chunk.
        workers: parallel decodes (None: tf.data's AUTOTUNE).

    Returns:
        `(images, labels, unreadable)`: uint8 `(N, image_size, image_size, 3)`
        images as the pipeline stores them (the float resize rounded), their
        int32 labels, and `[(path, reason), ...]` of the files that did not
        decode, in order.
    """
    import tensorflow as tf

    from keras_smallvit.images import decode_image_file

    def decode(index):
        return decode_image_uint8(tf.gather(paths_tensor, index), image_size, resize), index

    paths_tensor = tf.constant([os.fspath(p) for p in paths] or [""], tf.string)
    dataset = tf.data.Dataset.range(len(paths)).map(decode, num_parallel_calls=workers or tf.data.AUTOTUNE)
    # A file that fails drops its element: its index is missing below.
    dataset = dataset.ignore_errors().batch(256).prefetch(tf.data.AUTOTUNE)
    images, indices = [], []
    for batch_images, batch_indices in dataset.as_numpy_iterator():
        images.append(batch_images)
        indices.append(batch_indices)
        if progress is not None:
            progress(len(batch_indices))
    indices = np.concatenate(indices) if indices else np.zeros((0,), "int64")
    unreadable = []
    for index in sorted(set(range(len(paths))) - set(indices.tolist())):
        try:
            decode_image_file(paths[index])
            reason = "does not decode in the pipeline"
        except ValueError as error:
            reason = str(error).split(": ", 1)[-1]
        unreadable.append((paths[index], reason))
    images = np.concatenate(images) if images else np.zeros((0, image_size, image_size, 3), "uint8")
    return images, np.asarray(labels, "int32")[indices], unreadable


def decode_image_uint8(path, image_size, resize="squash"):
    """The uint8 `(image_size, image_size, 3)` image of the file at `path`
    (a string tensor) as the training pipeline stores it, in TensorFlow ops:
    decoded, resized in float by `resize`, rounded. `read_image_files` (in
    memory) and the streamed splits decode with it, so both give the same
    pixels."""
    from keras_smallvit.images import decode_image_graph

    return float_to_uint8(_to_float_image(decode_image_graph(path), image_size, resize))


def float_to_uint8(image):
    """A float image in [0, 1] as the pipeline stores it: `round(x * 255)`
    as uint8 (NumPy's `np.round`: halves to even, as `tf.round`)."""
    import tensorflow as tf

    return tf.cast(tf.round(image * 255.0), tf.uint8)


def _no_held_out_split(root, splits):
    where = "holds one folder of classes" if splits["train"] == root else "has train/ but no val/ or test/"
    return ValueError(
        f"Image folder {root!r} {where}: give `validation_split` (e.g. --validation-split 0.2) to hold "
        "out that fraction of each class for validation, or add a val/ or test/ folder. "
        f"Expected layout:\n{FOLDER_LAYOUT}"
    )


def _folder_root(name):
    root = name[len(FOLDER_PREFIX):]
    if not root:
        raise ValueError(f"Invalid `name`: {name!r}. Expected 'folder:<path>' with a non-empty path.")
    return root


def _folder_splits(name, files=None):
    """The splits `load_dataset` serves for a folder: "train", and "test"
    (its val/ or test/), or "val" and "test" when it has both."""
    splits = folder_layout(_folder_root(name), _folder_files(name, files))
    held_out = sorted(set(splits) - {"train"})
    return ("train", *held_out) if len(held_out) == 2 else ("train", "test") if held_out else ("train",)


def _folder_files(name, files):
    if files is not None:
        return files
    return _gfile(None) if _is_remote(_folder_root(name)) else _LocalFiles


def _folder_split(name, split, files=None, train=None):
    """The checked `FolderSplit` of a folder dataset's `split` (`train`: the
    train split's, when scanned already)."""
    files = _folder_files(name, files)
    root = _folder_root(name)
    layout = folder_layout(root, files)
    available = _folder_splits(name, files)
    if split not in available:
        if len(available) == 1:
            raise _no_held_out_split(root, layout)
        raise ValueError(f"Invalid `split` {split!r} for {root!r}. Allowed values: {', '.join(available)}.")
    folder = layout[split] if split in layout else layout["val" if "val" in layout else "test"]
    train = scan_split(layout["train"], files) if train is None else train
    return train if split == "train" else scan_split(folder, files, train.class_names)


def _load_folder(name, split, image_size, resize):
    from keras_smallvit.images import decode_image_file

    found, info = split_files(name, split)
    if image_size is None:
        # No paper default for an arbitrary folder: keep the first image's size
        # (square side = its height) so that every example has one shape.
        image_size = int(decode_image_file(found.paths[0]).shape[0])
    info = dataclasses.replace(info, image_size=image_size)
    return _files_dataset(found.paths, found.labels, image_size, resize), info
