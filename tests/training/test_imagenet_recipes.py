"""Issue 28's recipes: DeiT's ImageNet recipe, the SPT/LSA paper's ImageNet
recipe and the AAL 5 % config against the papers' numbers; the two
augmentations DeiT adds (RandAugment's magnitude noise, the random resized
crop)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_smallvit.training import TrainConfig
from keras_smallvit.training import autoaugment as aa
from keras_smallvit.training import pipeline
from training.configs import get_config
from training.configs._imagenet import deit_recipe

# tf.data / TF code and Keras-free configs: the same under every KERAS_BACKEND.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="The recipes' pipeline code is TensorFlow (tf.data) whatever the backend; tested on the TensorFlow pass",
)


def test_deit_recipe_is_the_papers():
    config = get_config("imagenet_deit_s")
    config.check_fields()
    # DeiT Table 9 / main.py: 300 epochs of samples, batch 1024, lr 5e-4 x 1024 / 512.
    assert config.epochs * config.repeated_augmentation == 300 and config.repeated_augmentation == 3
    assert config.batch_size == 1024 and config.lr == pytest.approx(1e-3)
    assert 5 <= config.warmup_epochs * config.repeated_augmentation <= 6
    assert (config.warmup_start_lr, config.min_lr, config.weight_decay) == (1e-6, 1e-5, 0.05)
    assert (config.label_smoothing, config.drop_path_rate, config.random_erasing) == (0.1, 0.1, 0.25)
    assert (config.mix_prob, config.mixup_alpha, config.cutmix_alpha) == (1.0, 0.8, 1.0)
    # rand-m9-mstd0.5 on timm's 0-10 scale, two ops.
    assert config.augmentation == "randaugment" and config.randaugment_ops == 2
    assert (config.randaugment_factor, config.randaugment_magnitude_std) == (0.9, 0.05)
    assert config.random_resized_crop == (0.08, 1.0) and config.crop_padding == 0 and config.image_size == 224
    assert config.model == "deit_s" and config.dataset == "imagenet2012"
    # The linear scaling rule follows the batch.
    assert deit_recipe(batch_size=256).lr == pytest.approx(2.5e-4)


def test_spt_lsa_imagenet_recipe_is_the_papers():
    config = get_config("imagenet_sl_deit_ti")
    config.check_fields()
    # SPT/LSA paper Sec. 4.1.3: batch 256, warm-up 5, lr 0.00025, 100 epochs; ViT-Tiny of DeiT.
    assert (config.batch_size, config.warmup_epochs, config.lr, config.epochs) == (256, 5, 2.5e-4, 100)
    assert config.model == "deit_ti" and config.techniques == ("spt", "lsa")
    assert config.augmentation == "autoaugment" and config.autoaugment_policy == "imagenet"


def test_aal_five_percent_config():
    config = get_config("imagenet5_aal_deit_s")
    config.check_fields()
    assert config.subset_ratio == 0.05 and config.model == "deit_s_distilled"
    assert config.aal and config.distillation == "hard" and config.aal_lambda == 2000.0
    # 0.99 per DeiT epoch for 200 of 300, then 0.98: per epoch of 3 DeiT epochs.
    first, second = config.aal_decay.split(",")
    rate, share = first.split("@")
    assert float(rate) == pytest.approx(0.99**3, abs=1e-6) and float(second) == pytest.approx(0.98**3, abs=1e-6)
    assert float(share) == pytest.approx(2 / 3, abs=1e-3)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"random_resized_crop": (0.5, 0.2)}, "random_resized_crop"),
        ({"random_resized_crop": (0.0, 1.0)}, "random_resized_crop"),
        ({"random_resized_crop": (0.08, 1.0), "crop_padding": 4}, "crop_padding"),
        ({"randaugment_magnitude_std": -0.1}, "randaugment_magnitude_std"),
    ],
)
def test_bad_augmentation_settings_name_the_field(changes, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        TrainConfig(**changes).check_fields()


def magnitude_fractions(decisions):
    """The fraction of its range each drawn op was applied at (from the values)."""
    fractions = []
    for op, value in zip(decisions["ops"].numpy(), decisions["magnitude"].numpy()):
        name = aa.OP_NAMES[op]
        if name not in aa.MAGNITUDE_RANGES or name == "posterize":
            continue
        low, high = aa.MAGNITUDE_RANGES[name]
        size = abs(value - 1.0) if name in aa.ENHANCE_OPS else abs(value)
        fractions.append((size - low) / (high - low) if name != "solarize" else (value - low) / (high - low))
    return fractions


def test_rand_augment_magnitude_noise():
    fixed, noisy = [], []
    for i in range(150):
        seed = tf.constant([i, 7], tf.int64)
        plain, drawn = aa.rand_augment_decisions(2, 0.9, seed), aa.rand_augment_decisions(2, 0.9, seed, 0.05)
        # The noise has its own stream: the same ops and signs.
        np.testing.assert_array_equal(plain["ops"].numpy(), drawn["ops"].numpy())
        np.testing.assert_array_equal(plain["sign"].numpy(), drawn["sign"].numpy())
        fixed += magnitude_fractions(plain)
        noisy += magnitude_fractions(drawn)
    np.testing.assert_allclose(fixed, 0.9, atol=1e-6)
    noisy = np.asarray(noisy)
    assert noisy.max() <= 1.0 + 1e-9 and noisy.min() >= 0.0
    # N(0.9, 0.05) clipped at 1: mean 0.8996, std 0.0494 (NumPy, 10^6 draws).
    reference = np.clip(np.random.default_rng(0).normal(0.9, 0.05, 10**6), 0, 1)
    assert abs(noisy.mean() - reference.mean()) < 0.015 and abs(noisy.std() - reference.std()) < 0.015
    with pytest.raises(ValueError, match="`magnitude_std`"):
        aa.rand_augment_decisions(2, 0.9, tf.constant([1, 2]), -0.5)


def test_random_resized_crop():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (32, 32, 3)), tf.uint8)
    # The whole image at ratio 1: unchanged.
    whole = pipeline.random_resized_crop(image, (1.0, 1.0), tf.constant([1, 2]), aspect=(1.0, 1.0))
    np.testing.assert_array_equal(whole.numpy(), image.numpy())
    first = pipeline.random_resized_crop(image, (0.08, 1.0), tf.constant([3, 4]))
    again = pipeline.random_resized_crop(image, (0.08, 1.0), tf.constant([3, 4]))
    other = pipeline.random_resized_crop(image, (0.08, 1.0), tf.constant([5, 6]))
    assert first.dtype == tf.uint8 and first.shape == (32, 32, 3)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())
    # Through the recipe's per-image step: in place of the padded crop.
    config = dataclasses.replace(deit_recipe(), augmentation="none", horizontal_flip=False)
    out = pipeline.augment_pixels(image, config, tf.constant([3, 4], tf.int64))
    assert out.shape == (32, 32, 3) and out.dtype == tf.uint8
