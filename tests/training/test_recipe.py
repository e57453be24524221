"""The papers' recipe, drawn as the official code draws it: batch mixing
(CutMix / Mixup), random erasing, normalisation, AutoAugment/RandAugment in
the pipeline, and the generic recipe for an image folder.

Distribution checks compare many seeded draws with the recipe's formulas
(`../shared/data/official_recipe.json`), written again here in NumPy; each
tolerance is a few standard errors of the statistic for the number of draws.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_smallvit.training import TrainConfig
from keras_smallvit.training import autoaugment
from keras_smallvit.training import load_split
from keras_smallvit.training import pipeline
from keras_smallvit.training import smoke
from keras_smallvit.training import train_dataset

# Pure tf.data / NumPy code (no keras, no KERAS_BACKEND in it): the same on
# every backend pass, so it runs on the TensorFlow one.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="The recipe's host pipeline: tf.data code, identical under every KERAS_BACKEND; tested on the TensorFlow pass",
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE_FILE = os.path.join(REPO, "..", "shared", "data", "official_recipe.json")


def recipe_facts():
    if not os.path.exists(RECIPE_FILE):
        pytest.skip(f"{RECIPE_FILE} is not beside this checkout (the project's shared facts)")
    with open(RECIPE_FILE) as f:
        return json.load(f)


def keyed_draws(count, draw):
    """`draw(key)` for keys 0..count-1 through one tf.data map (one graph)."""
    dataset = tf.data.Dataset.range(count).map(lambda i: draw(pipeline._key(0, 9, i)))
    return list(dataset.batch(count).as_numpy_iterator())[0]


# --- batch mixing ---------------------------------------------------------------

BATCH, SIDE, CLASSES = 8, 16, 8
MIX_DRAWS = 3000


@pytest.fixture(scope="module")
def mixing_draws():
    """3,000 mixed batches of 8 distinct constant images (image i is i + 1
    everywhere), labels one-hot of i: the pixels of a mixed image say how
    much of each source it holds."""
    config = TrainConfig(mix_prob=0.5, mixup_alpha=1.0, cutmix_alpha=1.0)
    images = tf.broadcast_to(tf.range(1, BATCH + 1, dtype=tf.float32)[:, None, None, None], (BATCH, SIDE, SIDE, 3))
    labels = tf.one_hot(tf.range(BATCH), CLASSES)

    def draw(key):
        x, y, mode, lam = pipeline.mix_batch(images, labels, config, key)
        return x[..., 0], y, mode, lam

    x, y, mode, lam = keyed_draws(MIX_DRAWS, draw)
    return dict(x=x, y=y, mode=mode, lam=lam, images=images.numpy()[..., 0])


def test_half_the_batches_are_mixed_and_split_evenly_between_cutmix_and_mixup(mixing_draws):
    mode = mixing_draws["mode"]
    mixed = np.mean(mode > 0)
    # Binomial(3000, 0.5): standard error 0.009.
    assert abs(mixed - 0.5) < 0.04, mixed
    cutmix_share = np.mean(mode[mode > 0] == 1)
    assert abs(cutmix_share - 0.5) < 0.06, cutmix_share  # ~1,500 mixed: s.e. 0.013
    unmixed = mode == 0
    np.testing.assert_array_equal(mixing_draws["x"][unmixed], np.broadcast_to(mixing_draws["images"], mixing_draws["x"][unmixed].shape))
    np.testing.assert_allclose(mixing_draws["lam"][unmixed], 1.0)


def test_mixup_lambda_is_one_beta_1_1_draw_per_batch(mixing_draws):
    is_mixup = mixing_draws["mode"] == 2
    lam, x, y = mixing_draws["lam"][is_mixup], mixing_draws["x"][is_mixup], mixing_draws["y"][is_mixup]
    # Beta(1, 1) = U(0, 1): mean 1/2, variance 1/12. ~750 draws: s.e. 0.011
    # (mean) and 0.0027 (variance). Keras' `CutMix(factor=1)` / per-sample
    # MixUp have variance ln(3)/8 = 0.137 / a different law per sample.
    assert abs(lam.mean() - 0.5) < 0.045
    assert abs(lam.var() - 1 / 12) < 0.012
    assert stats.kstest(lam, "uniform").pvalue > 1e-3
    # One lambda for the whole batch: image i is lam * x_i + (1 - lam) * x_p(i)
    # for one permutation p, and its label lam * e_i + (1 - lam) * e_p(i).
    sources = np.arange(1, BATCH + 1, dtype="float32")
    for image, l, labels in zip(x, lam, y):
        values = image[:, 0, 0]
        np.testing.assert_allclose(image, values[:, None, None] * np.ones_like(image), atol=1e-5)
        if 1 - l < 0.01:
            continue  # the partner is not recoverable from the pixels
        partner = np.round((values - l * sources) / (1 - l)).astype(int) - 1
        assert sorted(partner) == list(range(BATCH))
        expected = l * np.eye(CLASSES)[:BATCH] + (1 - l) * np.eye(CLASSES)[partner]
        np.testing.assert_allclose(labels, expected, atol=1e-4)


def numpy_cutmix_area_fraction(rng, count, side, alpha=1.0):
    """The recipe's CutMix box (written from its description): lam ~
    Beta(alpha, alpha), sides int(sqrt(1 - lam) * W), centre uniform, clipped;
    returns the clipped box's fraction of the image."""
    lam = rng.beta(alpha, alpha, size=count)
    cut = (np.sqrt(1 - lam) * side).astype(int)
    cx, cy = rng.integers(0, side, size=count), rng.integers(0, side, size=count)
    w = np.clip(cx + cut // 2, 0, side) - np.clip(cx - cut // 2, 0, side)
    h = np.clip(cy + cut // 2, 0, side) - np.clip(cy - cut // 2, 0, side)
    return w * h / side**2


def test_cutmix_box_and_lambda_follow_the_recipe(mixing_draws):
    is_cutmix = mixing_draws["mode"] == 1
    lam, x, y = mixing_draws["lam"][is_cutmix], mixing_draws["x"][is_cutmix], mixing_draws["y"][is_cutmix]
    images = mixing_draws["images"]
    pasted_fraction = []
    for image, l, labels in zip(x, lam, y):
        pasted = image != images  # where the image shows another source (or itself: fixed points)
        box = pasted.any(axis=0)  # the box is the same for the whole batch
        moved = [i for i in range(BATCH) if pasted[i].any()]
        # A rectangle, the same in every moved image; lambda from its area.
        if moved:
            rows, cols = np.nonzero(box)
            assert box.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            np.testing.assert_allclose(1 - l, box.sum() / SIDE**2, atol=1e-6)
        for i in range(BATCH):
            j = int(round(image[i][box].mean())) - 1 if box.any() else i
            expected = np.zeros(CLASSES)
            expected[i] += l
            expected[j] += 1 - l
            np.testing.assert_allclose(labels[i], expected, atol=1e-5)
        pasted_fraction.append(1 - l)
    pasted_fraction = np.asarray(pasted_fraction)
    reference = numpy_cutmix_area_fraction(np.random.default_rng(0), 20000, SIDE)
    # ~750 draws against 20,000 of the reference formula: same law (KS), and
    # its mean within 3.5 standard errors (the unclipped Beta(1, 1) box would
    # give 0.5; clipping makes it smaller).
    assert stats.ks_2samp(pasted_fraction, reference).pvalue > 1e-3
    assert abs(pasted_fraction.mean() - reference.mean()) < 3.5 * reference.std() / np.sqrt(len(pasted_fraction))


def test_mixing_accepts_any_positive_alpha_and_one_of_them_off():
    images = tf.random.stateless_uniform((4, 8, 8, 3), (1, 2))
    labels = tf.one_hot(tf.range(4), 4)
    config = TrainConfig(mix_prob=1.0, mixup_alpha=2.5, cutmix_alpha=0.0)

    def draw(key):
        return pipeline.mix_batch(images, labels, config, key)[2:]

    mode, lam = keyed_draws(2000, draw)
    assert set(mode) == {2}  # CutMix off: every mixed batch is Mixup
    # Beta(2.5, 2.5): variance 1 / (4 (2 * 2.5 + 1)) = 1/24 (s.e. ~0.0012 here).
    assert abs(lam.var() - 1 / 24) < 0.006 and abs(lam.mean() - 0.5) < 0.02


# --- random erasing -------------------------------------------------------------------


def numpy_erasing_boxes(rng, count, height, width, facts):
    """The recipe's erasing box sides for `count` erased images."""
    heights, widths = [], []
    low, high = facts["area_fraction"]
    aspect_low, aspect_high = facts["aspect_ratio"]
    while len(heights) < count:
        for _ in range(100):
            area = rng.uniform(low, high) * height * width
            aspect = rng.uniform(aspect_low, aspect_high)
            h, w = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if h < height and w < width:
                heights.append(h)
                widths.append(w)
                break
    return np.asarray(heights), np.asarray(widths)


def test_random_erasing_frequency_box_and_fill_follow_the_recipe():
    facts = recipe_facts()["random_erasing"]
    assert pipeline.ERASING_AREA == tuple(facts["area_fraction"])
    np.testing.assert_allclose(pipeline.ERASING_ASPECT, facts["aspect_ratio"], rtol=1e-4)
    height = width = 32
    fill = np.asarray([0.5, -1.0, 2.0], "float32")
    image = tf.fill((height, width, 3), 9.0)

    def draw(key):
        return pipeline.random_erasing(image, facts["probability"], fill, key)

    out = keyed_draws(4000, draw)
    erased = out != 9.0
    is_erased = erased.any(axis=(1, 2, 3))
    assert abs(is_erased.mean() - facts["probability"]) < 0.03  # Binomial(4000, 0.25): s.e. 0.007
    boxes_h, boxes_w = [], []
    for o, e in zip(out[is_erased], erased[is_erased]):
        np.testing.assert_array_equal(e, np.broadcast_to(e[..., :1], e.shape))  # every channel
        np.testing.assert_array_equal(o[e[..., 0]], np.broadcast_to(fill, (e[..., 0].sum(), 3)))
        rows, cols = np.nonzero(e[..., 0])
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h * w == e[..., 0].sum()  # a rectangle
        boxes_h.append(h)
        boxes_w.append(w)
    boxes_h, boxes_w = np.asarray(boxes_h), np.asarray(boxes_w)
    area = boxes_h * boxes_w / (height * width)
    # Sides are rounded: the area and aspect ranges hold up to a pixel of rounding.
    assert area.min() >= 0.02 * 0.7 and area.max() <= 0.4 * 1.25
    assert (boxes_h / boxes_w).min() >= 0.3 * 0.75 and (boxes_h / boxes_w).max() <= 3.34 / 0.75
    ref_h, ref_w = numpy_erasing_boxes(np.random.default_rng(0), 20000, height, width, facts)
    ref_area = ref_h * ref_w / (height * width)
    assert stats.ks_2samp(area, ref_area).pvalue > 1e-3
    assert stats.ks_2samp(boxes_h / boxes_w, ref_h / ref_w).pvalue > 1e-3
    # Corners spread over the whole image (uniform placement).
    assert is_erased.sum() > 800


# --- normalisation ------------------------------------------------------------------------


def test_dataset_statistics_are_the_recipes():
    facts = recipe_facts()["normalization_mean_std"]
    names = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped", "tiny_imagenet": "tiny_imagenet"}
    for fact_name, dataset in names.items():
        mean, std = pipeline.DATASET_STATISTICS[dataset]
        np.testing.assert_allclose(mean, facts[fact_name][0], atol=1e-4)
        np.testing.assert_allclose(std, facts[fact_name][1], atol=1e-4)


def tiny_config(tmp_path, **changes):
    config = smoke(TrainConfig(model="vit", dataset="digits", image_size=16, workdir=str(tmp_path)))
    return dataclasses.replace(config, **{"max_train_examples": 64, **changes})


def test_digits_are_normalised_with_their_own_training_statistics(tmp_path):
    config = tiny_config(tmp_path, max_train_examples=None, max_test_examples=None)
    data = load_split(config, "train")
    config = pipeline.resolve_data_settings(config, data)
    pixels = data.images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(config.normalization_mean, pixels.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(config.normalization_std, pixels.std(axis=0), atol=1e-4)
    assert config.autoaugment_policy == "cifar10"
    assert TrainConfig.from_json(config.to_json()) == config  # recorded as used
    # The eval pipeline feeds (x / 255 - mean) / std: zero mean, unit std on the training images.
    x = np.concatenate([b for b, _ in pipeline.eval_dataset(data, config).as_numpy_iterator()])
    np.testing.assert_allclose(x.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(x.reshape(-1, 3).std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(x, pipeline.preprocess_eval_images(data.images, config), atol=1e-6)
    # The papers' datasets keep the recipe's numbers whatever their data.
    cifar = pipeline.resolve_data_settings(dataclasses.replace(config, dataset="svhn_cropped",
                                                               normalization_mean=None, normalization_std=None,
                                                               autoaugment_policy=None), data)
    assert cifar.normalization_mean == pipeline.DATASET_STATISTICS["svhn_cropped"][0]
    assert cifar.autoaugment_policy == "svhn"


@pytest.mark.parametrize("augmentation", ["autoaugment", "randaugment"])
def test_policy_augmentation_runs_in_the_pipeline_repeatably(tmp_path, augmentation):
    """AutoAugment / RandAugment really run inside the training pipeline
    (images differ from the un-augmented ones), and stay keyed by the seed
    and the example's position: repeatable, resumable, independent of the
    number of parallel calls."""
    config = tiny_config(tmp_path, epochs=2, mix_prob=0.0, random_erasing=0.0, crop_padding=0,
                         horizontal_flip=False, augmentation=augmentation, randaugment_factor=0.9)
    data = load_split(config, "train")
    config = pipeline.resolve_data_settings(config, data)
    full = [x for x, _ in train_dataset(data, config).as_numpy_iterator()]
    again = [x for x, _ in train_dataset(data, dataclasses.replace(config, data_workers=3)).as_numpy_iterator()]
    resumed = [x for x, _ in train_dataset(data, config, initial_epoch=1).as_numpy_iterator()]
    assert all(np.array_equal(a, b) for a, b in zip(full, again)) and len(full) == len(again)
    assert all(np.array_equal(a, b) for a, b in zip(full[len(full) // 2:], resumed))
    plain = [x for x, _ in train_dataset(data, dataclasses.replace(config, augmentation="none")).as_numpy_iterator()]
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(np.concatenate(full), np.concatenate(plain))])
    if augmentation == "autoaugment":
        # At most the images whose sub-policy applies an op (78 % for the
        # CIFAR-10 policy); some ops leave a digit as it is (autocontrast and
        # equalize of an image that already spans 0-255, posterize 8 bits).
        table = autoaugment.policy_table("cifar10")
        applied = np.mean([1 - (1 - p1) * (1 - p2) for p1, _, _, p2, _, _ in table])
        assert 0.3 < changed <= applied + 0.1, (changed, applied)
    else:
        assert changed > 0.6, changed  # two ops on every image


# --- a folder of the user's images ---------------------------------------------------


def write_folder(root, num_classes, side, per_class=6):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(num_classes):
            os.makedirs(root / split / f"class_{c}", exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"class_{c}" / f"{i}.png")


def test_folder_recipe_needs_no_config_and_sizes_itself(tmp_path, capsys):
    from training.train import parse_args
    from training.train import resolve_config

    write_folder(tmp_path / "pets", num_classes=3, side=30)
    config = resolve_config(parse_args(["--dataset", f"folder:{tmp_path / 'pets'}"]))
    assert config.model == "sl_vit" and config.horizontal_flip and config.augmentation == "autoaugment"
    assert config.workdir == os.path.join("runs", "folder_pets")
    assert config.image_size is None
    sized = pipeline.resolve_image_size(config)
    assert sized.image_size == 32  # median side 30, rounded to a multiple of 16
    assert "image_size 32" in capsys.readouterr().out
    data = load_split(sized, "train")
    assert data.images.shape == (18, 32, 32, 3)
    resolved = pipeline.resolve_data_settings(sized, data)
    np.testing.assert_allclose(resolved.normalization_mean, (data.images / 255.0).reshape(-1, 3).mean(0), atol=1e-4)
