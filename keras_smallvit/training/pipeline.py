"""tf.data input pipeline of the papers' recipe, for all three backends.

tf.data runs on TensorFlow whatever the Keras backend, so this module uses
`tf` freely. The recipe, in the official code's order:

    per image:  zero-pad 4 + random crop, horizontal flip, AutoAugment
                (or RandAugment) on uint8, /255, normalise with the dataset's
                mean/std, random erasing (fill: the mean, in normalised units)
    per batch:  with probability 0.5, CutMix or Mixup (equal chance), one
                lambda ~ Beta(alpha, alpha) and one permutation per batch

Repeatable and resumable by construction: every random draw is a stateless
op keyed by `(seed, example position in the run)` or `(seed, batch position
in the run)`. Epoch `e` visits a permutation of `repeated_augmentation`
copies of the data keyed by `(seed, e)`. A run resumed at epoch `e` therefore
sees exactly the batches an uninterrupted run sees, and the parallel map
(`data_workers` calls) cannot change the result.

With `batch_augmentation="device"` the batch-level steps (normalisation,
random erasing, CutMix/Mixup) run in the compiled train step instead
(`device_augmentation.DeviceBatchAugmentation`): this pipeline then feeds
uint8 images after the per-image uint8 steps, with the parameters of those
steps drawn here by the same keys (`draw_erasing`, `draw_mix`), so both
settings train on the same batches up to float rounding.

Written with `tf.random.stateless_*` ops rather than Keras' augmentation
layers: their random state is a per-layer generator that cannot be keyed by
the example through a public API, Keras' `CutMix(factor=...)` does not draw
lambda ~ Beta(alpha, alpha), `MixUp` draws one lambda per sample and
`RandomErasing` has neither the recipe's ranges nor its fill.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_smallvit import data as datasets
from keras_smallvit.training import autoaugment
from keras_smallvit.training import streaming
from keras_smallvit.training.autoaugment import no_autograph
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int

AUTOTUNE = tf.data.AUTOTUNE

# Per-channel mean and std of the papers' datasets, in [0, 1] units (the
# official recipe's numbers). Other datasets compute theirs from the
# training split (`dataset_statistics`).
DATASET_STATISTICS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5070, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    # ImageNet's, as DeiT, PiT and Swin normalise (timm's IMAGENET_DEFAULT_MEAN / _STD).
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# The AutoAugment policy of each dataset in the papers; any other dataset
# (digits, folders of small images) gets the CIFAR-10 one.
DEFAULT_AUTOAUGMENT_POLICY = {
    "svhn_cropped": "svhn",
    "tiny_imagenet": "imagenet",
    "imagenet2012": "imagenet",
    "caltech_birds2011": "imagenet",
    "oxford_flowers102": "imagenet",
}

# Random erasing, as the official recipe draws it.
ERASING_AREA = (0.02, 0.4)
ERASING_ASPECT = (0.3, 1 / 0.3)
ERASING_TRIES = 100

# Independent random streams: one key per (stream, position).
_EXAMPLE_STREAM, _BATCH_STREAM = 1, 2


@dataclasses.dataclass
class InMemoryData:
    """One split as arrays: `images` uint8 `(N, H, W, 3)`, `labels` int32 `(N,)`,
    and the dataset's `class_names` (label order)."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple = None

    def __len__(self):
        return len(self.labels)

    def subset(self, indices):
        return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices])

    @property
    def image_size(self):
        return self.images.shape[1]

    @property
    def image_shape(self):
        return self.images.shape[1:]

    def reader(self):
        """`read(index)`: the uint8 image of example `index` (int64 tensor),
        in TensorFlow ops (as `streaming.StreamingData.reader`)."""
        # Captured eager tensors are passed to tf.data by reference, not copied into the graph.
        images = tf.constant(self.images)
        return lambda index: tf.gather(images, index)

    def head_images(self, count):
        """The first `count` images, uint8 (NumPy)."""
        return self.images[:count]


def load_split(config, split):
    """Loads `config.dataset`'s split into memory (uint8), with a progress
    bar and a one-line summary ("Found N images in K classes ..."), or
    streams it (`config.data_mode`, `keras_smallvit.training.streaming`).

    The small datasets of the papers fit in memory (CIFAR: 150 MB,
    Tiny-ImageNet: 1.2 GB as uint8), which makes every epoch a cheap,
    seeded permutation of indices. Data larger than `memory_budget_gb`
    stream, with the same batches.

    Args:
        config: the `TrainConfig`.
        split: "train", "val" or "test" (`keras_smallvit.data.evaluation_splits`
            says which a run uses). With `config.validation_split`, "train"
            is the training images less the held-out share, and "val" that
            share (`hold_out_validation`).

    Raises:
        UnreadableImagesError: image files that do not decode, all named
            (unless `config.skip_unreadable_images`).
    """
    if config.validation_split and split in ("train", "val"):
        return load_run_splits(config, (split,))[split]
    limit = config.max_train_examples if split == "train" else config.max_test_examples
    return _load_stored_split(config, split, limit, [streaming.memory_budget_bytes(config)])


def load_run_splits(config, splits=None):
    """`{split: InMemoryData}` of the splits a run uses (`splits`: default
    the training split and `evaluation_splits`), the training images read
    once when `validation_split` holds part of them out."""
    selection, report = datasets.evaluation_splits(config.dataset, config.validation_split, config.data_dir)
    splits = tuple(dict.fromkeys(splits or ("train", selection, report)))
    loaded, unreadable = {}, []
    room = [streaming.memory_budget_bytes(config)]  # what the splits loaded so far leave of the budget

    def load(split, limit):
        try:
            return _load_stored_split(config, split, limit, room)
        except UnreadableImagesError as error:  # go on: every split's bad files in one error
            unreadable.append(str(error).rsplit("\n", 1)[0])
            return None

    if config.validation_split and {"train", "val"} & set(splits):
        every = load("train", None)
    if config.validation_split and {"train", "val"} & set(splits) and every is not None:
        kept, held_out = hold_out_validation(every.labels, every.num_classes, config.validation_split,
                                             config.validation_split_seed)
        print(
            f"validation_split {config.validation_split}: {len(held_out):,} of {len(every):,} training images held "
            f"out for validation (stratified per class, validation_split_seed {config.validation_split_seed})"
        )
        lonely = [every.class_names[c] if every.class_names else str(c)
                  for c in range(every.num_classes) if not np.any(every.labels[held_out] == c)]
        if lonely:
            _warn(f"no validation image of class(es) {', '.join(map(repr, lonely))} (too few images to hold one out): "
                  "their accuracy is not measured")
        loaded["train"] = every.subset(_evenly(kept, config.max_train_examples))
        loaded["val"] = every.subset(_evenly(held_out, config.max_test_examples))
    for split in splits:
        if split not in loaded and not (config.validation_split and split in ("train", "val")):
            loaded[split] = load(split, config.max_train_examples if split == "train" else config.max_test_examples)
    if unreadable:
        raise UnreadableImagesError("\n".join(unreadable) + "\n" + UNREADABLE_WAY_ON)
    return {split: loaded[split] for split in splits}


def hold_out_validation(labels, num_classes, fraction, seed):
    """`(kept, held_out)` indices: `round(fraction * n)` images of each class
    of `n` (at least 1, at most n - 1, none of a class of 1), drawn by a
    permutation seeded by `(seed, class)`, in NumPy: the same split on every
    backend, for any run seed, and on resume. Sorted indices."""
    kept, held_out = [], []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        count = min(len(members) - 1, max(1, int(round(fraction * len(members))))) if len(members) > 1 else 0
        order = np.random.default_rng([seed, label]).permutation(len(members))
        held_out.append(members[order[:count]])
        kept.append(members[order[count:]])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held_out))


class UnreadableImagesError(ValueError):
    """Image files of a split that do not decode (all of them named)."""


UNREADABLE_WAY_ON = (
    "Replace or remove them, or train without them with --set skip_unreadable_images=true. Nothing was written."
)
# How many unreadable files an error lists in full per split.
MAX_LISTED_FILES = 50


def _evenly(indices, limit):
    """At most `limit` of `indices`, evenly spread (every class of a sorted
    file list keeps some)."""
    indices = np.asarray(indices)
    if limit is None or limit >= len(indices):
        return indices
    return indices[np.unique(np.linspace(0, len(indices) - 1, limit).round().astype(int))]


def _warn(message):
    print(f"warning: {message}", flush=True)


def _load_stored_split(config, split, limit, room):
    """One split as stored (before any hold-out), at most `limit` images, in
    memory or streamed (`streaming.choose_data_mode`; `room`: the budget left)."""
    from tqdm.auto import tqdm

    resize = config.resize
    files = datasets.split_files(config.dataset, split, config.data_dir)
    if files is None:  # TFDS, digits: no files to name
        if config.dataset in datasets.TFDS_NAMES:
            image_size = config.image_size or datasets.default_image_size(config.dataset)
            subset = split == "train" and config.subset_ratio is not None
            count = streaming.tfds_split_size(config.dataset, split, config.data_dir)
            if count is not None and subset:
                count = round(count * config.subset_ratio)
            if count is not None and limit is not None:
                count = min(count, limit)
            streamed = streaming.choose_data_mode(config, split, count or 0, image_size, room) == "stream"
            if streamed or streaming.tfds_random_access_only(config.dataset, config.data_dir):
                if subset:  # the subset of all the split's labels, then `limit`, as `_load_tf_split`
                    data = streaming.stream_tfds(config, split, None, image_size)
                    data = data.subset(training_subset(config, data.labels)[:limit])
                else:
                    data = streaming.stream_tfds(config, split, limit, image_size)
                if not streamed:
                    return _records_into_memory(data, config, split)
                print(f"Found {len(data):,} images in {data.num_classes} classes ({config.dataset} {split}, "
                      "streamed)", flush=True)
                return data
        return _load_tf_split(config, split, limit, resize)
    found, info = files
    picks = np.arange(len(found.paths))
    if split == "train" and config.subset_ratio is not None:
        picks = training_subset(config, found.labels, info.num_classes)
    picks = picks[_evenly(np.arange(len(picks)), limit)]
    paths = [found.paths[i] for i in picks]
    labels = [found.labels[i] for i in picks]
    image_size = config.image_size or datasets.default_image_size(config.dataset)
    if image_size is None:
        # No paper default for a folder: the first image's height (square), as `load_dataset`.
        from keras_smallvit.images import decode_image_file

        image_size = int(decode_image_file(paths[0]).shape[0])
    if streaming.choose_data_mode(config, split, len(paths), image_size, room) == "stream":
        if config.skip_unreadable_images:
            raise ValueError(
                "Invalid `skip_unreadable_images` True with streamed data (`data_mode`): a streamed image is "
                "decoded only when drawn. Allowed values when streaming: False (a file that does not decode "
                "stops the run), or --set data_mode=memory."
            )
        data = streaming.stream_files(found, picks, image_size, resize, info.num_classes, info.class_names)
        summary = f"Found {len(data):,} images in {info.num_classes} classes in {found.directory} (streamed"
        if found.skipped:
            summary += "; skipped: " + ", ".join(f"{n:,} {why}" for why, n in sorted(found.skipped.items()))
        print(summary + ")", flush=True)
        if found.missing_classes:
            _warn(f"{found.directory} has no folder for class(es) {', '.join(map(repr, found.missing_classes))} of "
                  "train: their accuracy is not measured on this split")
        return data
    with tqdm(total=len(paths), desc=f"loading {split} images", unit="img", leave=False) as bar:
        images, labels, unreadable = datasets.read_image_files(
            paths, labels, image_size, resize, progress=bar.update, workers=config.data_workers
        )
    skipped = dict(found.skipped)
    if unreadable:
        if not config.skip_unreadable_images:
            listed = "\n".join(f"  {path}: {reason}" for path, reason in unreadable[:MAX_LISTED_FILES])
            more = len(unreadable) - MAX_LISTED_FILES
            raise UnreadableImagesError(
                f"{len(unreadable)} of {len(paths):,} image files in {found.directory} cannot be read:\n{listed}"
                + (f"\n  ... and {more} more" if more > 0 else "")
                + "\n" + UNREADABLE_WAY_ON
            )
        skipped["unreadable images"] = len(unreadable)
    summary = f"Found {len(labels):,} images in {info.num_classes} classes in {found.directory}"
    if skipped:
        summary += " (skipped: " + ", ".join(f"{n:,} {why}" for why, n in sorted(skipped.items())) + ")"
    if limit is not None and limit < len(found.paths):
        summary += f" (max {limit:,} of {len(found.paths):,} taken)"
    print(summary, flush=True)
    if unreadable:
        _warn(f"{len(unreadable)} unreadable image file(s) skipped (skip_unreadable_images), e.g. {unreadable[0][0]}")
    if found.missing_classes:
        _warn(f"{found.directory} has no folder for class(es) {', '.join(map(repr, found.missing_classes))} of "
              "train: their accuracy is not measured on this split")
    if not len(labels):
        raise ValueError(f"The {split} split of `{config.dataset}` holds no readable image.")
    return InMemoryData(images, labels, info.num_classes, info.class_names)


def training_subset(config, labels, num_classes=None):
    """The positions (sorted) of the training split's examples a run with
    `config.subset_ratio` trains on: `keras_smallvit.data.class_balanced_subset`
    of the split's labels in stored order, seeded by `config.subset_seed`
    (NumPy: the same on every backend and on resume; a streaming input
    calls it on the same labels). Prints what it kept."""
    indices = datasets.class_balanced_subset(labels, config.subset_ratio, config.subset_seed, num_classes)
    print(
        f"subset_ratio {config.subset_ratio}: {len(indices):,} of {len(labels):,} training images kept "
        f"(class-balanced, subset_seed {config.subset_seed})",
        flush=True,
    )
    return indices


def split_labels(config, split):
    """The labels of a TFDS (or digits) split in stored order, without
    decoding TFDS images."""
    if config.dataset in datasets.TFDS_NAMES:
        return datasets.load_labels(config.dataset, split, config.data_dir)
    dataset, _ = datasets.load_dataset(config.dataset, split, 8, config.data_dir)
    return np.concatenate([labels for _, labels in dataset.batch(65536).as_numpy_iterator()])


def _load_tf_split(config, split, limit, resize):
    from tqdm.auto import tqdm

    indices = None
    if split == "train" and config.subset_ratio is not None:
        indices = training_subset(config, split_labels(config, split))
    dataset, info = datasets.load_dataset(
        config.dataset, split, config.image_size, config.data_dir, resize=resize, indices=indices
    )
    total = info.num_train if split == "train" else info.num_test
    if indices is not None:
        total = len(indices)
    if limit is not None:
        dataset, total = dataset.take(limit), limit if total is None else min(limit, total)
    images, labels = [], []
    with tqdm(total=total, desc=f"loading {config.dataset} {split}", unit="img", leave=False) as bar:
        for batch_images, batch_labels in dataset.batch(1024).as_numpy_iterator():
            images.append(np.round(batch_images * 255.0).astype("uint8"))
            labels.append(batch_labels.astype("int32"))
            bar.update(len(batch_labels))
    if not images:
        raise ValueError(f"The {split} split of `{config.dataset}` holds no images.")
    data = InMemoryData(np.concatenate(images), np.concatenate(labels), info.num_classes, info.class_names)
    print(f"Found {len(data):,} images in {data.num_classes} classes ({config.dataset} {split})", flush=True)
    return data


def _records_into_memory(data, config, split):
    """The `InMemoryData` of a streamed split (a TFDS dataset in the
    array_record format, which `as_dataset` cannot read): every image decoded
    once, by the ops that stream it."""
    from tqdm.auto import tqdm

    images = []
    with tqdm(total=len(data), desc=f"loading {config.dataset} {split}", unit="img", leave=False) as bar:
        for batch, _ in data.dataset(config.data_workers).batch(1024).as_numpy_iterator():
            images.append(batch)
            bar.update(len(batch))
    loaded = InMemoryData(np.concatenate(images), data.labels, data.num_classes, data.class_names)
    print(f"Found {len(loaded):,} images in {loaded.num_classes} classes ({config.dataset} {split})", flush=True)
    return loaded


def dataset_statistics(dataset_name, train_data):
    """`(mean, std)` per channel in [0, 1] units: the recipe's numbers for the
    papers' datasets, else computed from the training split's pixels."""
    if dataset_name in DATASET_STATISTICS:
        return DATASET_STATISTICS[dataset_name]
    if isinstance(train_data, streaming.StreamingData):
        if "sums" not in train_data.statistics:  # one pass over the files, once per split
            print(f"normalisation statistics of the {len(train_data):,} streamed training images: one decoding pass "
                  "(--set normalization_mean=... --set normalization_std=... to skip it)", flush=True)
            images = (x for x, _ in train_data.dataset().batch(streaming.READ_BATCH).as_numpy_iterator())
            train_data.statistics["sums"] = streaming.pixel_sums(images)
        count, total, squares = train_data.statistics["sums"]
    else:
        images = train_data.images
        count, total, squares = streaming.pixel_sums(images[i: i + 4096] for i in range(0, len(images), 4096))
    # From exact integer sums: the same numbers in memory and streamed.
    mean = total / (255.0 * count)
    std = np.sqrt(np.maximum(squares / (255.0**2 * count) - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)  # a constant channel: nothing to scale
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def default_autoaugment_policy(dataset_name):
    return DEFAULT_AUTOAUGMENT_POLICY.get(dataset_name, "cifar10")


# Every registered model accepts a multiple of 16 with its default patch
# size (ViT/CaiT/T2T: an 8x8 token grid, PiT/Swin: 16x16; CNNs any size).
IMAGE_SIZE_MULTIPLE = 16
# The automatic size of a folder's images stops here: the largest resolution
# the papers train their small-dataset models at (Tiny-ImageNet's 64 px;
# CIFAR's 32). A ViT's cost grows with the square of the side (the tokens)
# or faster: 240 px made a 5.3M-parameter SL-ViT at 2.4 img/s on a 2-core CPU.
MAX_AUTOMATIC_IMAGE_SIZE = 64


def automatic_image_size(median_side):
    """The rule for a folder's `image_size`: the images' median shorter side,
    rounded to a multiple of `IMAGE_SIZE_MULTIPLE` (16), between 16 and
    `MAX_AUTOMATIC_IMAGE_SIZE` (64)."""
    size = int(round(median_side / IMAGE_SIZE_MULTIPLE)) * IMAGE_SIZE_MULTIPLE
    return min(MAX_AUTOMATIC_IMAGE_SIZE, max(IMAGE_SIZE_MULTIPLE, size))


def resolve_image_size(config):
    """`config` with `image_size` measured from the images of a
    `folder:<path>` dataset when it is None (`automatic_image_size`, said in
    one line)."""
    if config.image_size is not None or not config.dataset.startswith(datasets.FOLDER_PREFIX):
        return config
    measured = datasets.folder_image_size(config.dataset)
    size = automatic_image_size(measured)
    capped = size == MAX_AUTOMATIC_IMAGE_SIZE and measured > MAX_AUTOMATIC_IMAGE_SIZE + IMAGE_SIZE_MULTIPLE / 2
    print(
        f"image_size {size}: the images' median side is {measured} px, "
        + (f"capped at {MAX_AUTOMATIC_IMAGE_SIZE}, the papers' largest small-data size (cost grows with the "
           "square of the side)" if capped else f"rounded to a multiple of {IMAGE_SIZE_MULTIPLE}")
        + " (--image-size to choose)"
    )
    return dataclasses.replace(config, image_size=size)


def resolve_data_settings(config, train_data):
    """`config` with what it leaves to the data filled in: the normalisation
    statistics (`dataset_statistics`) and the AutoAugment policy. The run
    records the result in `config.json`."""
    changes = {}
    if config.normalization_mean is None or config.normalization_std is None:
        mean, std = dataset_statistics(config.dataset, train_data)
        changes["normalization_mean"] = tuple(config.normalization_mean or mean)
        changes["normalization_std"] = tuple(config.normalization_std or std)
    if config.augmentation == "autoaugment" and config.autoaugment_policy is None:
        changes["autoaugment_policy"] = default_autoaugment_policy(config.dataset)
    return dataclasses.replace(config, **changes) if changes else config


def normalization(config, train_data=None):
    """`(mean, std)` float32 arrays the pipeline normalises with: the
    config's, else the dataset's (`dataset_statistics`, from `train_data`
    where the dataset has no recipe numbers); `(0, 1)` when `normalize` is off."""
    if not config.normalize:
        return np.zeros(3, "float32"), np.ones(3, "float32")
    mean, std = config.normalization_mean, config.normalization_std
    if mean is None or std is None:
        if train_data is None and config.dataset not in DATASET_STATISTICS:
            raise ValueError(
                f"Invalid `normalization_mean`/`normalization_std`: None, and `{config.dataset}` has no "
                "recipe statistics: give them, or resolve them from the training split first "
                "(`keras_smallvit.training.resolve_data_settings(config, train_data)`)."
            )
        computed = dataset_statistics(config.dataset, train_data)
        mean, std = mean or computed[0], std or computed[1]
    return np.asarray(mean, "float32"), np.asarray(std, "float32")


def steps_per_epoch(num_examples, config):
    if config.steps_per_epoch is not None:
        # 0 would run no step and fail deep in Keras; `validate()` says the same.
        check_positive_int("steps_per_epoch", config.steps_per_epoch)
    steps = (num_examples * config.repeated_augmentation) // config.batch_size
    if steps < 1:
        raise ValueError(
            f"Invalid `batch_size` {config.batch_size}: larger than the "
            f"{num_examples * config.repeated_augmentation} training images of one epoch."
        )
    return steps if config.steps_per_epoch is None else min(steps, config.steps_per_epoch)


def _key(seed, stream, position):
    """A stateless-random seed `[2]` unique to `(seed, stream, position)`."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(position, tf.int64))


# Per image: random erasing's drawn box `[apply, top, left, height, width]`.
# Per batch: the mixing's `[mode, top, bottom, left, right]` (CutMix's box).
ERASE_FIELDS, MIX_FIELDS = 5, 5
# Mixing modes of a batch.
NO_MIX, CUTMIX, MIXUP = 0, 1, 2


@no_autograph
def draw_erasing(height, width, probability, seed):
    """The recipe's random-erasing draw for one `(height, width)` image.

    With `probability`: up to `ERASING_TRIES` boxes of area
    `U(ERASING_AREA) * H * W` and aspect `U(ERASING_ASPECT)` (h / w), sides
    rounded; the first one strictly smaller than the image is placed
    uniformly. Returns int32 `[apply, top, left, box_height, box_width]`
    (`apply` 0: not erased, or no box fits).
    """
    apply_seed, area_seed, aspect_seed, top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 5)
    )
    area = tf.random.stateless_uniform([ERASING_TRIES], area_seed, *ERASING_AREA) * (height * width)
    aspect = tf.random.stateless_uniform([ERASING_TRIES], aspect_seed, *ERASING_ASPECT)
    box_h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    box_w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (box_h < height) & (box_w < width)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    box_h, box_w = box_h[first], box_w[first]
    # Top-left corner uniform over the positions that keep the box inside.
    top = tf.cast(tf.random.stateless_uniform([], top_seed) * tf.cast(height - box_h + 1, tf.float32), tf.int32)
    left = tf.cast(tf.random.stateless_uniform([], left_seed) * tf.cast(width - box_w + 1, tf.float32), tf.int32)
    erase = (tf.random.stateless_uniform([], apply_seed) < probability) & tf.reduce_any(fits)
    return tf.stack([tf.cast(erase, tf.int32), top, left, box_h, box_w])


@no_autograph
def erase_box(image, box, fill):
    """`image` `(H, W, C)` with `box` (from `draw_erasing`) filled with `fill` (per channel)."""
    height, width = image.shape[0], image.shape[1]
    top, left, box_h, box_w = box[1], box[2], box[3], box[4]
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    return tf.where((box[0] > 0) & inside[..., None], tf.cast(fill, image.dtype), image)


@no_autograph
def random_erasing(image, probability, fill, seed):
    """The recipe's random erasing of one float image `(H, W, C)`: the box
    of `draw_erasing`, filled with `fill` (per channel); none: unchanged."""
    return erase_box(image, draw_erasing(image.shape[0], image.shape[1], probability, seed), fill)


def erasing_fill(config):
    """What random erasing writes: the dataset's mean as is, in normalised
    units (the official code erases after normalising), float32 `(3,)`."""
    return np.asarray((0.0, 0.0, 0.0) if config.normalization_mean is None else config.normalization_mean, "float32")


def _example_seeds(seed):
    """`(crop, flip, policy, erase)` seeds of one example."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, 4))


# The aspect ratios of the random resized crop (Inception's, DeiT's).
RESIZED_CROP_ASPECT = (3 / 4, 4 / 3)


@no_autograph
def random_resized_crop(image, scale, seed, aspect=RESIZED_CROP_ASPECT):
    """Inception's random resized crop of one uint8 image `(H, W, 3)`: a box
    of `scale` (min, max) of the image's area and aspect ratio in `aspect`
    (`tf.image.stateless_sample_distorted_bounding_box`: the ratio uniform,
    10 tries, else the whole image), resized back to `(H, W)` bicubically.
    Returns uint8."""
    height, width = image.shape[0], image.shape[1]
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, extent)
    resized = tf.image.resize(tf.cast(crop, tf.float32), (height, width), method="bicubic")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


@no_autograph
def augment_pixels(image, config, seed):
    """The per-image uint8 steps of the recipe on one image `(S, S, 3)`:
    crop (zero-pad and crop, or the random resized crop), flip,
    AutoAugment / RandAugment. Returns uint8."""
    size = image.shape[0]
    crop_seed, flip_seed, policy_seed, _ = _example_seeds(seed)
    if config.random_resized_crop is not None:
        image = random_resized_crop(image, tuple(config.random_resized_crop), crop_seed)
    if config.crop_padding:
        pad = config.crop_padding
        image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(image, [size, size, 3], crop_seed)
    if config.horizontal_flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if config.augmentation == "autoaugment":
        policy = config.autoaugment_policy or default_autoaugment_policy(config.dataset)
        image = autoaugment.auto_augment(image, policy, policy_seed)
    elif config.augmentation == "randaugment":
        image = autoaugment.rand_augment(
            image, config.randaugment_ops, config.randaugment_factor, policy_seed, config.randaugment_magnitude_std
        )
    return image


@no_autograph
def draw_example_erasing(config, size, seed):
    """The erasing box of the example keyed by `seed` (`draw_erasing`);
    `apply` 0 everywhere when `config.random_erasing` is 0."""
    if not config.random_erasing:
        return tf.zeros([ERASE_FIELDS], tf.int32)
    return draw_erasing(size, size, config.random_erasing, _example_seeds(seed)[3])


@no_autograph
def augment_image(image, config, seed, mean, std):
    """The per-image recipe on one uint8 image `(S, S, 3)` (see the module
    docstring): returns the normalised float32 image."""
    size = image.shape[0]
    image = (tf.cast(augment_pixels(image, config, seed), tf.float32) / 255.0 - mean) / std
    if config.random_erasing:
        image = erase_box(image, draw_example_erasing(config, size, seed), erasing_fill(config))
    return image


@no_autograph
def cutmix_box(lam, height, width, seed):
    """CutMix's box as the recipe draws it: sides `int(sqrt(1 - lam) * W)`
    and `* H`, centre uniform, clipped to the image. Returns int32
    `[top, bottom, left, right]` (rows `top:bottom`, columns `left:right`)."""
    cut = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(cut * height, tf.int32)  # int(): truncation, as the recipe
    cut_w = tf.cast(cut * width, tf.int32)
    centre = tf.random.stateless_uniform([2], seed)
    cy = tf.cast(centre[0] * height, tf.int32)
    cx = tf.cast(centre[1] * width, tf.int32)
    top, bottom = tf.clip_by_value(cy - cut_h // 2, 0, height), tf.clip_by_value(cy + cut_h // 2, 0, height)
    left, right = tf.clip_by_value(cx - cut_w // 2, 0, width), tf.clip_by_value(cx + cut_w // 2, 0, width)
    return tf.stack([top, bottom, left, right])


@no_autograph
def sample_beta(alpha, seed):
    """One draw of Beta(alpha, alpha): X / (X + Y) with X, Y ~ Gamma(alpha)."""
    x = tf.random.stateless_gamma([2], seed, alpha=alpha)
    return x[0] / (x[0] + x[1])


def _mixes(config):
    """The mixing modes `config` draws from (CUTMIX, MIXUP: those with alpha > 0)."""
    if config.mix_prob == 0:
        return []
    return [m for m, alpha in ((CUTMIX, config.cutmix_alpha), (MIXUP, config.mixup_alpha)) if alpha > 0]


@no_autograph
def draw_mix(batch_size, height, width, config, seed):
    """The mixing of the batch keyed by `seed`: with probability
    `config.mix_prob`, CutMix or Mixup (equal chance when both alphas are
    > 0), one lambda ~ Beta(alpha, alpha) and one permutation per batch.

    Returns `(mode, lam, permutation, box)`: `mode` int32 (NO_MIX, CUTMIX,
    MIXUP); `lam` float32, the share of the batch's own images (CutMix:
    recomputed from the clipped box's area; 1 unmixed); `permutation` int32
    `(batch_size,)`, the partners; `box` int32 `[top, bottom, left, right]`,
    CutMix's (`cutmix_box`; zeros otherwise).
    """
    no_box = tf.zeros([4], tf.int32)
    modes = _mixes(config)
    if not modes:
        return tf.constant(NO_MIX), tf.constant(1.0), tf.range(batch_size), no_box
    draw_seed, beta_seed, shuffle_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    draw = tf.random.stateless_uniform([2], draw_seed)
    choice = tf.minimum(tf.cast(draw[1] * len(modes), tf.int32), len(modes) - 1)
    mode = tf.where(draw[0] < config.mix_prob, tf.gather(tf.constant(modes), choice), NO_MIX)
    permutation = tf.random.experimental.stateless_shuffle(tf.range(batch_size), shuffle_seed)

    def cutmix_parameters():
        box = cutmix_box(sample_beta(config.cutmix_alpha, beta_seed), height, width, box_seed)
        area = (box[1] - box[0]) * (box[3] - box[2])
        return 1.0 - tf.cast(area, tf.float32) / float(height * width), box

    def mixup_parameters():
        return sample_beta(config.mixup_alpha, beta_seed), no_box

    lam, box = tf.switch_case(mode, [lambda: (tf.constant(1.0), no_box), cutmix_parameters, mixup_parameters])
    return mode, lam, permutation, box


@no_autograph
def apply_mix(images, labels, mode, lam, permutation, box):
    """The mixing drawn by `draw_mix` applied to a batch: CutMix pastes the
    partners' `box`, Mixup blends by `lam`; labels `lam * y + (1 - lam) *
    y[permutation]`. Returns `(images, labels)`."""
    height, width = images.shape[1], images.shape[2]

    def mixed_labels():
        return lam * labels + (1.0 - lam) * tf.gather(labels, permutation)

    def apply_cutmix():
        rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
        inside = (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])
        return tf.where(inside[None, :, :, None], tf.gather(images, permutation), images), mixed_labels()

    def apply_mixup():
        return lam * images + (1.0 - lam) * tf.gather(images, permutation), mixed_labels()

    return tf.switch_case(mode, [lambda: (images, labels), apply_cutmix, apply_mixup])


@no_autograph
def mix_batch(images, labels, config, seed):
    """With probability `config.mix_prob`, CutMix or Mixup of a batch
    (`draw_mix`, then `apply_mix`). Returns `(images, labels, mode, lam)`;
    `mode` 0 none, 1 CutMix, 2 Mixup."""
    if not _mixes(config):
        return images, labels, tf.constant(NO_MIX), tf.constant(1.0)
    mode, lam, permutation, box = draw_mix(tf.shape(images)[0], images.shape[1], images.shape[2], config, seed)
    mixed, mixed_labels = apply_mix(images, labels, mode, lam, permutation, box)
    return mixed, mixed_labels, mode, lam


def resolve_batch_augmentation(config, batch_augmentation=None):
    """`batch_augmentation` ("host" or "device"), or `config`'s when None."""
    from keras_smallvit.training.config import BATCH_AUGMENTATIONS

    value = config.batch_augmentation if batch_augmentation is None else batch_augmentation
    return check_choice("batch_augmentation", value, BATCH_AUGMENTATIONS)


def train_dataset(train_data, config, initial_epoch=0, batch_augmentation=None, initial_step=0):
    """The training batches of epochs `initial_epoch .. config.epochs - 1`
    (`steps_per_epoch` each), from step `initial_step` of `initial_epoch` on:
    the batches an uninterrupted stream gives from that position.

    `batch_augmentation` "host": `((B, H, W, 3) float32 normalised, (B, C)
    one-hot)`, the whole recipe applied here. Mixed batches (Mixup or
    CutMix) carry mixed one-hot labels (the loss on them is the recipe's
    `lam * CE(y_a) + (1 - lam) * CE(y_b)`: cross-entropy, label smoothing
    included, is linear in the target).

    "device": the batch-level steps (normalisation, random erasing,
    CutMix/Mixup) are left to the compiled train step
    (`keras_smallvit.training.DeviceBatchAugmentation`), with their random
    draws made here, by the same keys: `(x, y)` with `y` the unmixed one-hot
    labels and `x` a dict of
        "images": uint8 `(B, H, W, 3)` after the per-image uint8 steps (crop,
            flip, AutoAugment/RandAugment: they stay here, since they come
            before normalising and apply a different op to each image);
        "erase": int32 `(B, ERASE_FIELDS)`, each image's `draw_erasing` box;
        "mix": int32 `(B, MIX_FIELDS)`, the batch's `[mode, top, bottom,
            left, right]` (`draw_mix`) on every row;
        "lam": float32 `(B,)`, the batch's lambda on every row;
        "permutation": int32 `(B,)`, the mixing partners.
    Per-batch values are repeated per row so that every entry has the batch
    axis, which Keras' data adapters and data-parallel sharding expect.

    The images come from `train_data.reader()`: gathered from memory, or
    decoded and resized in this map for a streamed split (the same pixels).

    Args:
        train_data: the training split (`InMemoryData`, or
            `streaming.StreamingData`).
        config: the `TrainConfig`.
        initial_epoch: the first epoch (a resumed run's).
        batch_augmentation: "host" or "device"; None = `config.batch_augmentation`.
        initial_step: the first step within `initial_epoch` (a run resumed
            mid-epoch), in `[0, steps_per_epoch)`.
    """
    device = resolve_batch_augmentation(config, batch_augmentation) == "device"
    labels = train_data.labels
    num_examples, image_size = len(train_data), train_data.image_size
    steps = steps_per_epoch(num_examples, config)
    if not 0 <= initial_step < steps:
        raise ValueError(f"Invalid `initial_step` {initial_step}: must be in [0, steps_per_epoch) = [0, {steps}).")
    per_epoch = steps * config.batch_size
    seed, num_classes, batch_size = config.seed, train_data.num_classes, config.batch_size
    config = resolve_data_settings(config, train_data)
    mean, std = normalization(config)

    first_example = initial_step * batch_size

    @no_autograph
    def epoch_examples(epoch):
        # A seeded permutation of indices, not a shuffle buffer: any position of the run
        # is reached by slicing, and every process can compute the same order.
        copies = tf.tile(tf.range(num_examples, dtype=tf.int64), [config.repeated_augmentation])
        order = tf.random.experimental.stateless_shuffle(copies, seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        example_ids = epoch * per_epoch + tf.range(per_epoch, dtype=tf.int64)
        start = tf.where(epoch == initial_epoch, tf.constant(first_example, tf.int64), 0)
        return tf.data.Dataset.from_tensor_slices((example_ids[start:], order[start:per_epoch]))

    examples = tf.data.Dataset.range(initial_epoch, config.epochs).flat_map(epoch_examples)
    # Multi-host: each process would keep its rows of every global batch here, before any decoding,
    # `examples.filter(lambda i, _: i % batch_size // (batch_size // process_count) == process_index)`,
    # and batch `batch_size // process_count`; every key stays the global position.
    read = train_data.reader()  # uint8 image of an index: from memory, or decoded from its file or record
    # Captured eager tensors are passed to tf.data by reference, not copied into the graph.
    labels_t = tf.constant(labels)

    @no_autograph
    def load(example_id, index):
        key = _key(seed, _EXAMPLE_STREAM, example_id)
        label = tf.one_hot(tf.gather(labels_t, index), num_classes, dtype=tf.float32)
        if device:
            pixels = augment_pixels(read(index), config, key)
            pixels.set_shape((image_size, image_size, 3))
            return {"images": pixels, "erase": draw_example_erasing(config, image_size, key)}, label
        image = augment_image(read(index), config, key, mean, std)
        image.set_shape((image_size, image_size, 3))
        return image, label

    # Stateless draws: a parallel, ordered map gives the same batches for any
    # number of parallel calls (a streamed split decodes in these calls too).
    batches = examples.map(load, num_parallel_calls=max(1, config.data_workers), deterministic=True)
    batches = batches.batch(batch_size, drop_remainder=True)
    batch_ids = tf.data.Dataset.range(initial_epoch * steps + initial_step, config.epochs * steps)

    @no_autograph
    def mix(batch_id, batch):
        key = _key(seed, _BATCH_STREAM, batch_id)
        if device:
            x, y = batch
            mode, lam, permutation, box = draw_mix(batch_size, image_size, image_size, config, key)
            rows = tf.tile(tf.concat([mode[None], box], axis=0)[None], [batch_size, 1])
            return dict(x, mix=rows, lam=tf.fill([batch_size], lam), permutation=permutation), y
        x, y, _, _ = mix_batch(*batch, config, key)
        return x, y

    batches = tf.data.Dataset.zip(batch_ids, batches).map(mix, num_parallel_calls=AUTOTUNE, deterministic=True)
    return batches.prefetch(AUTOTUNE)


def eval_dataset(eval_data, config, batch_augmentation=None):
    """Test batches in a fixed order, with one-hot labels: normalised
    float32 images ("host"), or `{"images": uint8}` ("device": the
    `DeviceBatchAugmentation` wrapper normalises them; no erasing or mixing).

    Args:
        eval_data: the split (`InMemoryData`, or `streaming.StreamingData`:
            decoded by `config.data_workers` parallel calls).
        config: the `TrainConfig`.
        batch_augmentation: "host" or "device"; None = `config.batch_augmentation`.
    """
    device = resolve_batch_augmentation(config, batch_augmentation) == "device"
    num_classes = eval_data.num_classes
    mean, std = normalization(config)
    if isinstance(eval_data, streaming.StreamingData):
        dataset = eval_data.dataset(max(1, config.data_workers))
    else:
        dataset = tf.data.Dataset.from_tensor_slices((eval_data.images, eval_data.labels))
    dataset = dataset.batch(config.eval_batch_size)

    @no_autograph
    def prepare(x, y):
        x = {"images": x} if device else (tf.cast(x, tf.float32) / 255.0 - mean) / std
        return x, tf.one_hot(y, num_classes, dtype=tf.float32)

    return dataset.map(prepare, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def preprocess_eval_images(images, config):
    """uint8 images as `eval_dataset` feeds them to the model (NumPy)."""
    mean, std = normalization(config)
    return ((images.astype("float32") / 255.0 - mean) / std).astype("float32")
