"""Streamed splits (`data_mode="stream"`, `keras_smallvit.training.streaming`)
against the in-memory path: the same batches for the same seed from a folder
of image files, from mocked TFDS records and from records TFDS prepared
(array_record streamed by index against tfrecord read by `as_dataset`), a
pipeline stopped mid-epoch
and resumed at that step, batches independent of the parallel decodes, the
automatic choice by the memory budget, and a run killed mid-epoch that
resumes to the uninterrupted in-memory run's result."""

import dataclasses
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_smallvit.data import class_balanced_subset
from keras_smallvit.training import TrainConfig
from keras_smallvit.training import load_run_splits
from keras_smallvit.training import load_split
from keras_smallvit.training import pipeline
from keras_smallvit.training import streaming
from keras_smallvit.training import train_dataset
from tests.contract import FAST_FIT_JIT

DATA_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the data pipeline is tf.data and NumPy, identical under every KERAS_BACKEND; tested on the TensorFlow pass",
)
TINY_VIT = {"depth": 1, "hidden_dim": 16, "num_heads": 2, "head_dim": 8}
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def make_folder(root, per_class=(7, 5, 6), test_per_class=2):
    """train/ and test/ of 3 classes: random pixels of random sizes (every
    image resized), PNG and JPEG."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", per_class), ("test", (test_per_class,) * 3)):
        for label, count in enumerate(counts):
            folder = os.path.join(root, split, f"class_{label}")
            os.makedirs(folder)
            for i in range(count):
                height, width = rng.integers(14, 40, size=2)
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                extension = "jpg" if i % 3 == 0 else "png"
                Image.fromarray(pixels).save(os.path.join(folder, f"{i:02d}.{extension}"))
    return f"folder:{root}"


def folder_config(tmp_path, **changes):
    config = TrainConfig(
        model="sl_vit", dataset=make_folder(str(tmp_path / "images")), image_size=16, batch_size=4, epochs=2,
        warmup_epochs=0, repeated_augmentation=2, data_workers=2, augmentation="none", mix_prob=1.0,
        workdir=str(tmp_path / "run"),
    )
    return dataclasses.replace(config, **changes)


def batches(data, config, **kwargs):
    return list(train_dataset(data, config, **kwargs).as_numpy_iterator())


def same(a, b):
    return len(a) == len(b) and all(
        np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b)
    )


def same_device_batches(a, b):
    return len(a) == len(b) and all(
        all(np.array_equal(x1[k], x2[k]) for k in x1) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b)
    )


@DATA_ONLY
def test_a_streamed_folder_gives_the_in_memory_batches(tmp_path, capsys):
    config = folder_config(tmp_path, augmentation="randaugment")  # the recipe's per-image steps, unchanged
    memory = load_run_splits(dataclasses.replace(config, data_mode="memory"))
    streamed = load_run_splits(dataclasses.replace(config, data_mode="stream"))
    assert "(streamed)" in capsys.readouterr().out
    assert isinstance(memory["train"], pipeline.InMemoryData)
    assert isinstance(streamed["train"], streaming.StreamingData) and isinstance(streamed["test"], streaming.StreamingData)
    np.testing.assert_array_equal(streamed["train"].labels, memory["train"].labels)
    # Same pixels, same statistics (exact integer sums), same batches: host and device mode, train and eval.
    np.testing.assert_array_equal(streamed["train"].head_images(100), memory["train"].images)
    config = pipeline.resolve_data_settings(config, memory["train"])
    assert pipeline.resolve_data_settings(dataclasses.replace(config, normalization_mean=None, normalization_std=None),
                                          streamed["train"]) == config
    expected = batches(memory["train"], config)
    assert len(expected) == 2 * (2 * 18 // 4)
    assert same(batches(streamed["train"], config), expected)
    assert same_device_batches(batches(streamed["train"], config, batch_augmentation="device"),
                               batches(memory["train"], config, batch_augmentation="device"))
    eval_memory = list(pipeline.eval_dataset(memory["test"], config).as_numpy_iterator())
    assert same(list(pipeline.eval_dataset(streamed["test"], config).as_numpy_iterator()), eval_memory)


@DATA_ONLY
def test_a_streamed_validation_split_holds_out_the_same_images(tmp_path):
    config = folder_config(tmp_path, validation_split=0.3, max_train_examples=10)
    memory = load_run_splits(dataclasses.replace(config, data_mode="memory"), ("train", "val"))
    streamed = load_run_splits(dataclasses.replace(config, data_mode="stream"), ("train", "val"))
    for split in ("train", "val"):
        assert len(streamed[split]) == len(memory[split])
        np.testing.assert_array_equal(streamed[split].head_images(100), memory[split].images)
        np.testing.assert_array_equal(streamed[split].labels, memory[split].labels)


def as_dataset_in_index_order(num_examples):
    """A mock of TFDS's reader: the mocked data source's records in index
    order, decoded by TFDS's own `deserialize_example` (what `as_dataset`
    reads from an array_record dataset, its shards in order).
    `tfds.testing.mock_data`'s own `as_dataset` draws other examples than its
    data source."""
    import tensorflow as tf
    from tensorflow_datasets.testing import mocking

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        generator = mocking.SerializedRandomFakeGenerator(self.info.features, num_examples)
        records = tf.data.Dataset.from_tensor_slices([generator[i] for i in range(num_examples)])
        return records.map(self.info.features.deserialize_example)

    return as_dataset


@DATA_ONLY
def test_streamed_mocked_tfds_records_give_the_in_memory_batches(tmp_path):
    import tensorflow_datasets as tfds

    config = TrainConfig(dataset="cifar10", image_size=16, batch_size=4, epochs=2, warmup_epochs=0,
                         repeated_augmentation=1, data_workers=2, mix_prob=1.0, max_train_examples=10,
                         workdir=str(tmp_path / "run"))
    with tfds.testing.mock_data(num_examples=12, as_dataset_fn=as_dataset_in_index_order(12)):
        memory = load_split(dataclasses.replace(config, data_mode="memory"), "train")
        streamed = load_split(dataclasses.replace(config, data_mode="stream"), "train")
        assert isinstance(streamed, streaming.StreamingData) and len(streamed) == len(memory) == 10
        np.testing.assert_array_equal(streamed.labels, memory.labels)
        np.testing.assert_array_equal(streamed.head_images(10), memory.images)  # 32 px records resized to 16
        assert memory.images.std() > 15  # random pixels (antialiased to half size): a real comparison
        assert same(batches(streamed, config), batches(memory, config))


def prepared_records(tmp_path):
    """`{file format: data_dir}` of the same tiny cifar10-named dataset as
    TFDS prepares it (`tests/fixtures/make_tfds_records.py`), copied."""
    import shutil

    root = tmp_path / "tfds"
    shutil.copytree(os.path.join(FIXTURES, "tfds_records"), root)
    return {name: str(root / name) for name in ("array_record", "tfrecord")}


@DATA_ONLY
def test_array_record_streamed_by_index_gives_what_tfds_reads_from_tfrecord(tmp_path):
    # The real TFDS, no mock: `as_dataset` of the tfrecord copy (memory) against
    # `as_data_source` of the array_record copy (stream), the same examples.
    data_dirs = prepared_records(tmp_path)
    config = TrainConfig(dataset="cifar10", image_size=24, batch_size=4, epochs=2, warmup_epochs=0,
                         repeated_augmentation=1, data_workers=2, mix_prob=1.0, workdir=str(tmp_path / "run"))
    memory = load_run_splits(dataclasses.replace(config, data_mode="memory", data_dir=data_dirs["tfrecord"]))
    streamed = load_run_splits(dataclasses.replace(config, data_mode="stream", data_dir=data_dirs["array_record"]))
    # `as_dataset` cannot read array_record: in memory, those records are read by index too.
    by_index = load_run_splits(dataclasses.replace(config, data_mode="memory", data_dir=data_dirs["array_record"]))
    for split, count in (("train", 14), ("test", 6)):
        assert isinstance(streamed[split], streaming.StreamingData) and len(streamed[split]) == count
        assert isinstance(by_index[split], pipeline.InMemoryData)
        np.testing.assert_array_equal(streamed[split].labels, memory[split].labels)
        np.testing.assert_array_equal(streamed[split].head_images(100), memory[split].images)
        np.testing.assert_array_equal(by_index[split].images, memory[split].images)
    assert memory["train"].images.std() > 15  # random pixels: a real comparison
    assert same(batches(streamed["train"], config), batches(memory["train"], config))
    with pytest.raises(ValueError, match=r"`data_mode` 'stream' for.*\n  tfds build cifar10 --file_format=array_record"):
        load_split(dataclasses.replace(config, data_mode="stream", data_dir=data_dirs["tfrecord"]), "train")
    # A class-balanced subset: the same images kept on every path (NumPy reference: the subset's indices).
    half = dict(subset_ratio=0.5, subset_seed=3)
    kept = class_balanced_subset(memory["train"].labels, 0.5, 3)
    assert 0 < len(kept) < 14
    for mode, data_dir in (("memory", "tfrecord"), ("stream", "array_record"), ("memory", "array_record")):
        subset = load_split(dataclasses.replace(config, data_mode=mode, data_dir=data_dirs[data_dir], **half), "train")
        assert isinstance(subset, streaming.StreamingData) == (mode == "stream") and len(subset) == len(kept)
        np.testing.assert_array_equal(subset.labels, memory["train"].labels[kept])
        np.testing.assert_array_equal(subset.head_images(100), memory["train"].images[kept])


@DATA_ONLY
def test_a_streamed_pipeline_stopped_mid_epoch_resumes_at_that_step_bit_identically(tmp_path):
    config = folder_config(tmp_path, batch_augmentation="device")
    data = load_split(dataclasses.replace(config, data_mode="stream"), "train")
    config = pipeline.resolve_data_settings(config, data)
    steps = pipeline.steps_per_epoch(len(data), config)
    full = batches(data, config)
    # "Killed" after 3 batches of epoch 1, and after 5 of epoch 0: each restart gives the rest.
    iterator = train_dataset(data, config).as_numpy_iterator()
    seen = [next(iterator) for _ in range(steps + 3)]
    del iterator
    assert same_device_batches(seen + batches(data, config, initial_epoch=1, initial_step=3), full)
    assert same_device_batches(batches(data, config, initial_step=5), full[5:])
    with pytest.raises(ValueError, match="`initial_step`"):
        train_dataset(data, config, initial_step=steps)


@DATA_ONLY
def test_streamed_batches_do_not_depend_on_the_number_of_decode_workers(tmp_path):
    config = folder_config(tmp_path, data_workers=1)
    data = load_split(dataclasses.replace(config, data_mode="stream"), "train")
    config = pipeline.resolve_data_settings(config, data)
    one = batches(data, config)
    assert same(batches(data, dataclasses.replace(config, data_workers=5)), one)
    assert not same(batches(data, dataclasses.replace(config, seed=1)), one)


@DATA_ONLY
def test_auto_streams_the_splits_the_memory_budget_cannot_hold(tmp_path, capsys):
    config = folder_config(tmp_path)  # 18 training images of 16x16x3: 13,824 bytes; 6 test: 4,608
    assert isinstance(load_split(config, "train"), pipeline.InMemoryData)  # half the free memory
    splits = load_run_splits(dataclasses.replace(config, memory_budget_gb=16_000 / 1e9))
    # The training split fits; the test split no longer does: it streams, and says why.
    assert isinstance(splits["train"], pipeline.InMemoryData)
    assert isinstance(splits["test"], streaming.StreamingData)
    out = capsys.readouterr().out
    assert "data_mode auto: the 6 test images at 16x16 take 0.00 GB" in out and "--set data_mode=memory" in out
    small = dataclasses.replace(config, memory_budget_gb=1e-6)
    assert isinstance(load_split(small, "train"), streaming.StreamingData)
    assert isinstance(load_split(dataclasses.replace(small, data_mode="memory"), "train"), pipeline.InMemoryData)
    with pytest.raises(ValueError, match="`skip_unreadable_images`"):
        load_split(dataclasses.replace(small, skip_unreadable_images=True), "train")


@pytest.mark.parametrize("changes, argument", [
    ({"data_mode": "disk"}, "data_mode"),
    ({"memory_budget_gb": 0.0}, "memory_budget_gb"),
])
def test_bad_streaming_settings_name_the_argument(changes, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        TrainConfig(**changes).validate()


@pytest.mark.large
@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="the streamed pipeline is tf.data and NumPy, identical under every KERAS_BACKEND; its three tiny "
    "trainings run on the torch pass, the quickest to train (resume itself: tests/training/test_training.py)",
)
def test_a_streamed_run_killed_mid_epoch_resumes_to_the_in_memory_result(tmp_path, monkeypatch):
    from keras_smallvit.training import train
    import keras_smallvit.training.runner as runner
    from tests.backend_utils import assert_same_saved_weights

    config = folder_config(
        tmp_path, model_overrides=dict(TINY_VIT), epochs=2, warmup_epochs=1, jit_compile=FAST_FIT_JIT, export=False,
        augmentation="none", data_mode="memory", workdir=str(tmp_path / "memory"),
    )
    expected = train(config, verbose=0)
    streamed = dataclasses.replace(config, data_mode="stream", workdir=str(tmp_path / "streamed"))
    original = runner.RunFolder

    class KilledMidEpoch(original):
        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if self.epoch_in_progress == 1 and batch == 3:
                raise KeyboardInterrupt("simulated kill in the middle of epoch 2")

        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            self.epoch_in_progress = epoch

    monkeypatch.setattr(runner, "RunFolder", KilledMidEpoch)
    with pytest.raises(KeyboardInterrupt):
        train(streamed, verbose=0)
    monkeypatch.setattr(runner, "RunFolder", original)
    got = train(streamed, verbose=0)  # resumes at epoch 2, from its first step
    for key in ("final_top1", "final_top5", "best_top1", "best_epoch"):
        assert got[key] == expected[key], key
    assert_same_saved_weights(config.workdir, streamed.workdir)
