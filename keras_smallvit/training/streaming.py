"""Splits read from their files or records as the pipeline draws them: data
that does not fit in memory.

`TrainConfig.data_mode` chooses: "memory" loads a split as uint8 arrays
(`pipeline.InMemoryData`), "stream" keeps only its labels and where each
image is (`StreamingData`: a folder's file list, or a TFDS dataset's record
index) and decodes and resizes each image inside the tf.data map that
augments it; "auto" (the default) streams the splits whose uint8 size does
not fit in `memory_budget_gb` (`choose_data_mode`).

Both modes give the same batches for the same seed: the epoch is the same
seeded permutation of indices (no shuffle buffer), every random draw is
keyed by `(seed, example position)`, and a streamed image is decoded by the
ops that decode it for memory (`keras_smallvit.data.decode_image_uint8`
for files; TFDS's own `deserialize_example` for records, then the same
resize and rounding). So a streamed run resumes bit-identically at any
batch, and its batches do not depend on the number of parallel decodes.

TFDS datasets stream by random access, `builder.as_data_source`: they must
be prepared in the `array_record` format (`tfds build NAME
--file_format=array_record`); a `tfrecord` dataset is refused with that
command (its records have no index to read the i-th one by).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_smallvit import data as datasets

# Bytes in a GB (`memory_budget_gb`, and what the messages say).
GB = 1e9
# Without `memory_budget_gb`: this share of the memory available when the
# data load (the rest: the model, tf.data's buffers, the framework).
DEFAULT_BUDGET_SHARE = 0.5
# Images decoded per call where a whole split is read (labels, statistics).
READ_BATCH = 256


def available_memory_bytes():
    """The memory available now (Linux `MemAvailable`), else the physical
    memory, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget_bytes(config):
    """`config.memory_budget_gb` in bytes, or for None `DEFAULT_BUDGET_SHARE`
    of the available memory (no limit where it cannot be read)."""
    if config.memory_budget_gb is not None:
        return config.memory_budget_gb * GB
    available = available_memory_bytes()
    return float("inf") if available is None else DEFAULT_BUDGET_SHARE * available


def uint8_bytes(count, image_size):
    """What `count` images of `image_size` take in memory as uint8 RGB."""
    return int(count) * int(image_size) ** 2 * 3


def choose_data_mode(config, split, count, image_size, room):
    """"memory" or "stream" for a split of `count` images of `image_size`.

    Args:
        config: the `TrainConfig` (`data_mode`, `memory_budget_gb`).
        split: its name (for the message).
        count: its number of images.
        image_size: their side once resized.
        room: a one-item list, the bytes of the budget that the splits
            loaded so far left; a split loaded into memory takes its share.
    """
    size = uint8_bytes(count, image_size)
    if config.data_mode == "stream":
        return "stream"
    if config.data_mode == "memory" or size <= room[0]:
        room[0] -= size
        return "memory"
    budget = "memory_budget_gb" if config.memory_budget_gb is not None else "half the available memory"
    print(
        f"data_mode auto: the {count:,} {split} images at {image_size}x{image_size} take {size / GB:.2f} GB as uint8, "
        f"more than the {max(room[0], 0) / GB:.2f} GB left of {budget}: streaming them (decoded as the pipeline draws "
        "them; --set data_mode=memory to load them)",
        flush=True,
    )
    return "stream"


class FileImages:
    """Image files read by index: `reader()` gives `read(position)`, which
    decodes and resizes one (`keras_smallvit.data.decode_image_uint8`)."""

    def __init__(self, paths, image_size, resize):
        self.paths = [os.fspath(p) for p in paths]
        self.image_size, self.resize = image_size, resize

    def reader(self):
        # Made eagerly, outside the map's graph; captured eager tensors are passed
        # to tf.data by reference, not copied into the graph.
        paths = tf.constant(self.paths or [""], tf.string)
        return lambda position: datasets.decode_image_uint8(tf.gather(paths, position), self.image_size, self.resize)


class TFDSRecords:
    """A prepared TFDS split read by index (`builder.as_data_source`, the
    `array_record` format): `read(position)` fetches the serialized record
    and decodes it with TFDS's `deserialize_example` (the ops of
    `builder.as_dataset`), then resizes it as `keras_smallvit.data.load_dataset`."""

    def __init__(self, name, split, data_dir, image_size, resize, data_mode="stream"):
        import tensorflow_datasets as tfds

        self.name, self.image_size, self.resize = name, image_size, resize
        builder = tfds.builder(name, data_dir=data_dir)
        try:
            source = builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
        except NotImplementedError:
            why = "" if data_mode == "stream" else " (the split does not fit the memory budget)"
            raise ValueError(
                f"Invalid `data_mode` {data_mode!r}{why} for `{name}`: it is prepared in the "
                f"{builder.info.file_format.value if builder.info.file_format else 'tfrecord'} format, whose records "
                "cannot be read by index. Prepare it in the array_record format:\n"
                f"  tfds build {name} --file_format=array_record"
                + (f" --data_dir={data_dir}" if data_dir else "")
                + "\nor load it into memory with --set data_mode=memory."
            ) from None
        except (AssertionError, FileNotFoundError, KeyError, ValueError) as error:
            where = data_dir if data_dir is not None else datasets._tfds_data_dir()
            raise datasets._tfds_not_prepared(name, where, builder.data_dir) from error
        self.source = source
        self.features = builder.info.features
        self.image_key, self.label_key = builder.info.supervised_keys
        label_feature = self.features[self.label_key]
        self.num_classes, self.class_names = label_feature.num_classes, tuple(label_feature.names)

    def __len__(self):
        return len(self.source)

    def _record(self, position):
        def fetch(i):
            record = self.source[int(i)]
            return record if isinstance(record, bytes) else bytes(record)

        record = tf.numpy_function(fetch, [position], tf.string, stateful=False)
        record.set_shape(())
        return record

    def reader(self):
        def read(position):
            example = self.features.deserialize_example(self._record(position))
            image = datasets._to_float_image(example[self.image_key], self.image_size, self.resize)
            return datasets.float_to_uint8(image)

        return read

    def labels(self, count):
        """The int32 labels of records `0 .. count - 1`, their images not decoded."""
        import tensorflow_datasets as tfds

        skip = {self.image_key: tfds.decode.SkipDecoding()}

        def label(i):
            example = self.features.deserialize_example(self._record(i), decoders=skip)
            return tf.cast(example[self.label_key], tf.int32)

        dataset = tf.data.Dataset.range(count).map(label, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches = list(dataset.batch(4096).as_numpy_iterator())
        return np.concatenate(batches) if batches else np.zeros((0,), "int32")


@dataclasses.dataclass
class StreamingData:
    """One split streamed: `source` (`FileImages`, `TFDSRecords`) reads
    image `positions[i]` as example `i`; `labels` int32 `(N,)` in memory.
    The interface of `pipeline.InMemoryData` (`len`, `subset`, `labels`,
    `num_classes`, `class_names`, `image_size`, `image_shape`, `reader`,
    `head_images`) without `images`."""

    source: object
    positions: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple = None
    statistics: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __len__(self):
        return len(self.labels)

    def subset(self, indices):
        return dataclasses.replace(self, positions=self.positions[indices], labels=self.labels[indices],
                                   statistics={})

    @property
    def image_size(self):
        return self.source.image_size

    @property
    def image_shape(self):
        return (self.image_size, self.image_size, 3)

    def reader(self):
        """`read(index)`: the uint8 image of example `index` (int64 tensor),
        in TensorFlow ops (a tf.data map)."""
        positions, read = tf.constant(np.asarray(self.positions, "int64")), self.source.reader()
        return lambda index: read(tf.gather(positions, index))

    def dataset(self, workers=None):
        """`(image, label)` of every example, in order, decoded by `workers`
        parallel calls (an ordered map)."""
        read, labels = self.reader(), tf.constant(self.labels)

        def load(index):
            return read(index), tf.gather(labels, index)

        return tf.data.Dataset.range(len(self)).map(
            load, num_parallel_calls=workers or tf.data.AUTOTUNE, deterministic=True
        )

    def head_images(self, count):
        """The first `count` images, uint8 `(count, S, S, 3)` (NumPy)."""
        batches = [x for x, _ in self.dataset().take(count).batch(READ_BATCH).as_numpy_iterator()]
        return np.concatenate(batches) if batches else np.zeros((0, *self.image_shape), "uint8")


def pixel_sums(batches):
    """`(count, sum, sum of squares)` per channel of uint8 image batches, in
    integers (exact whatever the order: streamed and in-memory statistics agree)."""
    count, total, squares = 0, np.zeros(3, "int64"), np.zeros(3, "int64")
    for batch in batches:
        pixels = np.asarray(batch).reshape(-1, 3).astype("int64")
        count += len(pixels)
        total += pixels.sum(axis=0)
        squares += (pixels * pixels).sum(axis=0)
    return count, total, squares


def stream_files(found, picks, image_size, resize, num_classes, class_names):
    """The `StreamingData` of files `picks` of a `FolderSplit`: nothing decoded."""
    labels = np.asarray([found.labels[i] for i in picks], "int32")
    source = FileImages([found.paths[i] for i in picks], image_size, resize)
    return StreamingData(source, np.arange(len(labels), dtype="int64"), labels, num_classes, class_names)


def tfds_split_size(name, split, data_dir):
    """The number of examples of a prepared TFDS split, or None unknown."""
    import tensorflow_datasets as tfds

    try:
        splits = tfds.builder(name, data_dir=data_dir).info.splits
        return int(splits[split].num_examples) if split in splits else None
    except Exception:  # not prepared, mocked: the loader says what is wrong
        return None


def tfds_random_access_only(name, data_dir):
    """Whether a prepared TFDS dataset is stored in a random-access format
    only (array_record), which `builder.as_dataset` cannot read: then its
    in-memory split is read by index too."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import file_adapters

    try:
        formats = tfds.builder(name, data_dir=data_dir).info.available_file_formats()
    except Exception:  # not prepared, mocked: `as_dataset` says what is wrong
        return False
    return bool(formats) and file_adapters.FileFormat.TFRECORD not in formats


def stream_tfds(config, split, limit, image_size):
    """The `StreamingData` of a TFDS split (its first `limit` records): its
    labels read once, no image decoded."""
    records = TFDSRecords(config.dataset, split, config.data_dir, image_size, config.resize, config.data_mode)
    count = len(records) if limit is None else min(limit, len(records))
    print(f"reading the labels of {count:,} {config.dataset} {split} records", flush=True)
    labels = records.labels(count)
    if not len(labels):
        raise ValueError(f"The {split} split of `{config.dataset}` holds no images.")
    return StreamingData(records, np.arange(count, dtype="int64"), labels, records.num_classes, records.class_names)
