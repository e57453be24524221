"""Batch-level augmentation on the accelerator (`batch_augmentation="device"`):
normalisation, random erasing and CutMix/Mixup in `DeviceBatchAugmentation`
on the current backend, against the host pipeline as the reference (the
draws are shared, so the batches must agree up to float rounding).

No model is compiled here: the wrapper's `augment` / `mix_labels` run
directly on the pipeline's dict batches. The fitted, resumed and exported
run is in `tests/training/test_run_folder.py` (beside the host run it is
compared with).
"""

import dataclasses

import keras
import numpy as np
import pytest
from scipy import stats

from keras_smallvit.training import DeviceBatchAugmentation
from keras_smallvit.training import TrainConfig
from keras_smallvit.training import apply_overrides
from keras_smallvit.training import eval_dataset
from keras_smallvit.training import load_split
from keras_smallvit.training import pipeline
from keras_smallvit.training import smoke
from keras_smallvit.training import train_dataset
from tests.contract import BACKEND

SIDE, BATCH = 16, 8
DICT_KEYS = {"images": ("uint8", 3), "erase": ("int32", 5), "mix": ("int32", 5), "lam": ("float32", None),
             "permutation": ("int32", None)}


def tiny_config(**changes):
    config = smoke(TrainConfig(model="vit", dataset="digits", image_size=SIDE, workdir="unused"))
    fields = dict(max_train_examples=64, batch_size=BATCH, epochs=2, warmup_epochs=1)
    fields.update(changes)
    return dataclasses.replace(config, **fields)


def as_numpy(x):
    return keras.ops.convert_to_numpy(x)


def wrapper_for(config):
    """The wrapper as the runner builds it (its inner model is not called here)."""
    inner = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    mean, std = pipeline.normalization(config)
    return DeviceBatchAugmentation(inner, mean, std, pipeline.erasing_fill(config))


@pytest.fixture(scope="module")
def every_step_on():
    """16 batches of the recipe with every step on (AutoAugment, crop,
    flip, erasing on every image, half the batches mixed), from both paths."""
    config = tiny_config(augmentation="autoaugment", random_erasing=1.0, mix_prob=0.5)
    data = load_split(config, "train")
    config = pipeline.resolve_data_settings(config, data)
    host = list(train_dataset(data, config, batch_augmentation="host").as_numpy_iterator())
    device = list(train_dataset(data, config, batch_augmentation="device").as_numpy_iterator())
    return config, data, host, device


def test_device_batches_equal_the_host_pipelines(every_step_on):
    config, _, host, device = every_step_on
    wrapper = wrapper_for(config)
    assert len(host) == len(device) == 16
    modes = set()
    for (host_x, host_y), (x, y) in zip(host, device):
        assert set(x) == set(DICT_KEYS)
        for key, (dtype, last) in DICT_KEYS.items():
            assert x[key].dtype == dtype and x[key].shape[0] == BATCH, key
            assert last is None or x[key].shape[-1] == last, key
        assert set(np.unique(y)) <= {0.0, 1.0}  # unmixed one-hot: the wrapper mixes them
        np.testing.assert_allclose(as_numpy(wrapper.augment(x)), host_x, atol=1e-6)
        np.testing.assert_allclose(as_numpy(wrapper.mix_labels(x, y)), host_y, atol=1e-6)
        modes.add(int(x["mix"][0, 0]))
        if x["erase"][:, 0].any():  # the erasing shows: without it the images differ
            unerased = as_numpy(wrapper.augment({k: v for k, v in x.items() if k != "erase"}))
            assert not np.allclose(unerased, host_x, atol=1e-3)
    assert modes == {0, 1, 2}  # no mixing, CutMix and Mixup all compared
    assert np.mean([x["erase"][:, 0].mean() for x, _ in device]) > 0.9  # random_erasing=1.0 (where a box fits)


def test_device_evaluation_batches_are_the_normalised_images(every_step_on):
    config, data, _, _ = every_step_on
    wrapper = wrapper_for(config)
    host = list(eval_dataset(data, config, batch_augmentation="host").as_numpy_iterator())
    device = list(eval_dataset(data, config, batch_augmentation="device").as_numpy_iterator())
    for (host_x, host_y), (x, y) in zip(host, device):
        assert list(x) == ["images"] and x["images"].dtype == "uint8"
        np.testing.assert_allclose(as_numpy(wrapper.augment(x)), host_x, atol=1e-6)
        np.testing.assert_array_equal(as_numpy(wrapper.mix_labels(x, y)), host_y)


def test_device_mixing_follows_the_recipe_and_mixes_labels_as_pixels():
    """384 batches of 4 through the device path: half mixed, CutMix and
    Mixup evenly, Mixup's lambda ~ Beta(1, 1), CutMix's lambda the share of
    the image outside its box; and, on images of distinct constant values,
    every image's mean pixel is its mixed label's weighted value (all modes)."""
    batch = 4
    config = tiny_config(batch_size=batch, epochs=8, repeated_augmentation=3, crop_padding=0, horizontal_flip=False,
                         augmentation="none", random_erasing=0.0, mix_prob=0.5, normalize=False)
    data = load_split(config, "train")
    batches = [x for x, _ in train_dataset(data, config, batch_augmentation="device").as_numpy_iterator()]
    assert len(batches) == 384
    mix = np.stack([x["mix"] for x in batches])  # (batches, batch, 5)
    lam = np.stack([x["lam"] for x in batches])
    assert (mix == mix[:, :1]).all() and (lam == lam[:, :1]).all()  # one draw per batch, on every row
    mode, lam = mix[:, 0, 0], lam[:, 0]
    assert abs(np.mean(mode > 0) - 0.5) < 0.1  # Binomial(384, 0.5): s.e. 0.026
    assert abs(np.mean(mode[mode > 0] == 1) - 0.5) < 0.13  # ~190 mixed: s.e. 0.036
    mixup = lam[mode == 2]  # ~96 draws of U(0, 1): s.e. 0.03 (mean), 0.008 (variance)
    assert abs(mixup.mean() - 0.5) < 0.1 and abs(mixup.var() - 1 / 12) < 0.03
    assert stats.kstest(mixup, "uniform").pvalue > 1e-3
    top, bottom, left, right = (mix[mode == 1, 0, i] for i in range(1, 5))
    np.testing.assert_allclose(lam[mode == 1], 1 - (bottom - top) * (right - left) / SIDE**2, atol=1e-6)
    np.testing.assert_array_equal(lam[mode == 0], 1.0)
    for x in batches:
        assert sorted(x["permutation"]) == list(range(batch))

    # One call on all batches together: each batch's partners offset to its rows.
    values = np.arange(1, batch + 1)
    x = {
        "images": np.broadcast_to(np.tile(values, len(batches))[:, None, None, None], (len(batches) * batch, SIDE, SIDE, 3)).astype("uint8"),
        "mix": np.concatenate([b["mix"] for b in batches]),
        "lam": np.concatenate([b["lam"] for b in batches]),
        "permutation": np.concatenate([b["permutation"] + k * batch for k, b in enumerate(batches)]).astype("int32"),
    }
    y = np.tile(np.eye(batch, dtype="float32"), (len(batches), 1))
    wrapper = wrapper_for(config)
    pixels = as_numpy(wrapper.augment(x)) * 255.0
    mixed = as_numpy(wrapper.mix_labels(x, y))
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pixels.mean(axis=(1, 2, 3)), mixed @ values, atol=1e-3)


# --- configuration and the wrapper's API -----------------------------------------------


def test_batch_augmentation_is_a_validated_config_choice():
    config = apply_overrides(TrainConfig(), ["batch_augmentation=device"])
    assert config.batch_augmentation == "device" and TrainConfig().batch_augmentation == "host"
    config.validate()
    assert TrainConfig.from_json(config.to_json()) == config
    for check in ("check_fields", "validate"):  # the command line's first check too, before Keras
        with pytest.raises(ValueError, match="`batch_augmentation`: 'gpu'. Allowed values: 'host', 'device'"):
            getattr(apply_overrides(TrainConfig(), ["batch_augmentation=gpu"]), check)()
    with pytest.raises(ValueError, match="`batch_augmentation` 'device' with `aal`"):
        dataclasses.replace(config, aal=True, aal_teacher_model="resnet56").check_fields()
    distributed = dataclasses.replace(config, distribute=True)
    distributed.check_fields()  # the backend is known once Keras is imported (`check_backend`)
    if BACKEND == "tensorflow":
        with pytest.raises(ValueError, match="`batch_augmentation` 'device' with `distribute`.*MirroredStrategy"):
            distributed.validate()
    else:
        distributed.validate()
    data = pipeline.InMemoryData(np.zeros((8, SIDE, SIDE, 3), "uint8"), np.zeros(8, "int32"), 2)
    with pytest.raises(ValueError, match="`batch_augmentation`: 'gpu'"):
        train_dataset(data, tiny_config(), batch_augmentation="gpu")


def test_wrapper_arguments_config_and_precision(tmp_path):
    with pytest.raises(ValueError, match="`model`"):
        DeviceBatchAugmentation("vit")
    inner = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="`std`"):
        DeviceBatchAugmentation(inner, std=(0.2, 0.0, 0.3))
    with pytest.raises(ValueError, match="`mean`/`std`/`fill`"):
        DeviceBatchAugmentation(inner, mean=(0.5,))
    wrapper = DeviceBatchAugmentation(inner, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7), (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="Expected a dict with 'images'"):
        wrapper.augment(np.zeros((1, SIDE, SIDE, 3), "uint8"))
    restored = DeviceBatchAugmentation.from_config(wrapper.get_config())
    assert restored.get_config() == wrapper.get_config()
    path = str(tmp_path / "wrapper.keras")
    wrapper.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, DeviceBatchAugmentation) and reloaded.fill == wrapper.fill
    for a, b in zip(reloaded.get_weights(), wrapper.get_weights()):
        np.testing.assert_array_equal(a, b)

    # Mixed precision: the augmentation stays float32 (lambda is not cast to
    # float16), the inner model casts; compile scales the loss as for the model.
    images = np.random.default_rng(0).integers(0, 256, (4, SIDE, SIDE, 3)).astype("uint8")
    x = {"images": images, "mix": np.tile([[2, 0, 0, 0, 0]], (4, 1)).astype("int32"),
         "lam": np.full(4, 0.123456789, "float32"), "permutation": np.array([1, 2, 3, 0], "int32")}
    expected = as_numpy(wrapper.augment(x))
    keras.config.set_dtype_policy("mixed_float16")
    half_inner = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    half = DeviceBatchAugmentation(half_inner, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7), (0.1, 0.2, 0.3))
    got = half.augment(x)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_array_equal(as_numpy(got), expected)
    half.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert isinstance(half.optimizer, keras.optimizers.LossScaleOptimizer)
