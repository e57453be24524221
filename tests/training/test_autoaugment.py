"""AutoAugment / RandAugment ops against Pillow, and their seeded random draws."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_smallvit.training import autoaugment as aa

# Pure tf.data / NumPy code (no keras, no KERAS_BACKEND in it): the same on
# every backend pass, so it runs on the TensorFlow one.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="AutoAugment / RandAugment: tf.data code, identical under every KERAS_BACKEND; tested on the TensorFlow pass",
)

Image = pytest.importorskip("PIL.Image")
ImageEnhance = pytest.importorskip("PIL.ImageEnhance")
ImageOps = pytest.importorskip("PIL.ImageOps")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICIES_JSON = os.path.join(REPO, "..", "shared", "data", "autoaugment_policies.json")
GREY = (128, 128, 128)


# --------------------------------------------------------------------------
# The reference: the official code's PIL calls
# --------------------------------------------------------------------------


def pil_op(image, name, m):
    img = Image.fromarray(image)
    width, height = img.size
    if name == "shearX":
        out = img.transform(img.size, Image.AFFINE, (1, m, 0, 0, 1, 0), Image.BICUBIC, fillcolor=GREY)
    elif name == "shearY":
        out = img.transform(img.size, Image.AFFINE, (1, 0, 0, m, 1, 0), Image.BICUBIC, fillcolor=GREY)
    elif name == "translateX":
        out = img.transform(img.size, Image.AFFINE, (1, 0, m * width, 0, 1, 0), fillcolor=GREY)
    elif name == "translateY":
        out = img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, m * height), fillcolor=GREY)
    elif name == "rotate":
        rot = img.convert("RGBA").rotate(m)
        out = Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)
    elif name == "color":
        out = ImageEnhance.Color(img).enhance(m)
    elif name == "contrast":
        out = ImageEnhance.Contrast(img).enhance(m)
    elif name == "sharpness":
        out = ImageEnhance.Sharpness(img).enhance(m)
    elif name == "brightness":
        out = ImageEnhance.Brightness(img).enhance(m)
    elif name == "posterize":
        out = ImageOps.posterize(img, int(m))
    elif name == "solarize":
        out = ImageOps.solarize(img, m)
    elif name == "autocontrast":
        out = ImageOps.autocontrast(img)
    elif name == "equalize":
        out = ImageOps.equalize(img)
    else:
        out = ImageOps.invert(img)
    return np.asarray(out)


def sample_images():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:32, 0:32]
    smooth = np.stack([(rows * 8) % 256, (cols * 7 + rows) % 256, ((cols - 16) ** 2 + (rows - 16) ** 2) % 256], -1)
    constant_channel = rng.integers(50, 120, (32, 32, 3))
    constant_channel[..., 1] = 77  # autocontrast / equalize leave it as is
    few_values = rng.choice([3, 90, 91, 250], (20, 20, 3))  # sparse histogram
    images = [
        rng.integers(0, 256, (32, 32, 3)),
        rng.integers(0, 256, (24, 40, 3)),  # non-square: H 24, W 40
        smooth,
        constant_channel,
        few_values,
    ]
    return [image.astype("uint8") for image in images]


def magnitudes(name):
    """Every AutoAugment level of the op, both signs, plus a few values off
    the levels (extrapolating factors, large angles, 90/180 degrees)."""
    if name in aa.NO_MAGNITUDE_OPS:
        return [0.0]
    levels = sorted(set(aa._LEVEL_VALUES[aa.OP_NAMES.index(name)].tolist()))
    if name in aa.SIGNED_OPS:
        extra = {"rotate": [90.0, 180.0, -135.5, 400.0], "translateX": [-1.1], "translateY": [1.1]}
        return levels + [-m for m in levels if m] + extra.get(name, [0.77, -0.9])
    if name in aa.ENHANCE_OPS:
        return [1 + m for m in levels] + [1 - m for m in levels if m] + [-0.5, 2.5]
    if name == "posterize":
        return [1.0, 2.0, 3.0] + levels
    return levels + [1.0, 128.0, 255.0]  # solarize


# (max |difference|, max fraction of differing values) per op. Measured on
# x86-64 with Pillow 13: every op is exact (0 differing values).
TOLERANCES = {
    # Double-precision cubic taps; truncation can flip by 1 where a build
    # of Pillow contracts to FMA (not on x86-64, where it is exact).
    "shearX": (1, 0.01),
    "shearY": (1, 0.01),
    # Integer sample positions (floor of a double / 16.16 fixed point).
    "translateX": (0, 0),
    "translateY": (0, 0),
    "rotate": (0, 0),
    # Pillow 13's float32 blend, reproduced op for op; 1 level allowed for
    # the same FMA reason (exact here).
    "color": (1, 0.01),
    "contrast": (1, 0.01),
    "sharpness": (1, 0.01),
    "brightness": (1, 0.01),
    # Lookup tables of integers: exact by construction.
    "posterize": (0, 0),
    "solarize": (0, 0),
    "autocontrast": (0, 0),
    "equalize": (0, 0),
    "invert": (0, 0),
}


@pytest.mark.parametrize("name", aa.OP_NAMES)
def test_op_matches_pil(name):
    max_abs, max_fraction = TOLERANCES[name]
    op = tf.function(lambda image, m: aa.apply_op(image, name, m), reduce_retracing=True)
    worst, differing, total = 0, 0, 0
    for image in sample_images():
        for m in magnitudes(name):
            expected = pil_op(image, name, m).astype("int32")
            eager = aa.apply_op(tf.constant(image), name, m)
            graph = op(tf.constant(image), tf.constant(m, tf.float64))
            assert eager.dtype == tf.uint8 and eager.shape == image.shape
            np.testing.assert_array_equal(eager.numpy(), graph.numpy())
            difference = np.abs(eager.numpy().astype("int32") - expected)
            worst = max(worst, int(difference.max()))
            differing += int((difference > 0).sum())
            total += difference.size
            assert difference.max() <= max_abs, (name, m, image.shape, difference.max())
    assert differing <= max_fraction * total, (name, differing, total)


def test_geometric_fill_is_grey():
    image = np.zeros((16, 16, 3), "uint8")
    for name, m in [("translateX", 0.5), ("translateY", -0.5), ("rotate", 30.0), ("shearX", 0.3), ("shearY", -0.3)]:
        out = aa.apply_op(tf.constant(image), name, m).numpy()
        # Fill is not interpolated: uncovered pixels are exactly grey.
        assert set(np.unique(out).tolist()) == {0, 128}, name


def test_ops_accept_unknown_static_shape():
    image = sample_images()[1]

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def run(x):
        return tf.stack([aa.apply_op(x, name, 0.2 if name != "posterize" else 5.0) for name in aa.OP_NAMES])

    out = run(tf.constant(image)).numpy()
    for k, name in enumerate(aa.OP_NAMES):
        m = 0.2 if name != "posterize" else 5.0
        np.testing.assert_array_equal(out[k], aa.apply_op(tf.constant(image), name, m).numpy())


# --------------------------------------------------------------------------
# Policies and validation
# --------------------------------------------------------------------------


def test_policies_match_shared_facts():
    if not os.path.exists(POLICIES_JSON):
        pytest.skip("shared/data/autoaugment_policies.json is not in this checkout")
    with open(POLICIES_JSON) as f:
        facts = json.load(f)
    assert set(aa.POLICY_NAMES) == set(facts["policies"])
    for policy in aa.POLICY_NAMES:
        assert [list(s) for s in aa.policy_table(policy)] == facts["policies"][policy]
    assert {k: list(v) for k, v in aa.MAGNITUDE_RANGES.items()} == facts["magnitude_ranges"]
    assert list(aa.NO_MAGNITUDE_OPS) == facts["no_magnitude_ops"]
    assert set(aa.OP_NAMES) == set(facts["magnitude_ranges"]) | set(facts["no_magnitude_ops"])


def test_policy_tables_are_well_formed():
    for policy in aa.POLICY_NAMES:
        table = aa.policy_table(policy)
        assert len(table) == 25
        for p1, op1, level1, p2, op2, level2 in table:
            assert 0 <= p1 <= 1 and 0 <= p2 <= 1 and op1 in aa.OP_NAMES and op2 in aa.OP_NAMES
            assert 0 <= level1 < aa.NUM_LEVELS and 0 <= level2 < aa.NUM_LEVELS
    # Posterize levels: the official np.round(np.linspace(8, 4, 10)).
    posterize = aa._LEVEL_VALUES[aa.OP_NAMES.index("posterize")]
    np.testing.assert_array_equal(posterize, [8, 8, 7, 7, 6, 6, 5, 5, 4, 4])


def test_validation():
    image = tf.zeros([8, 8, 3], tf.uint8)
    seed = tf.constant([1, 2], tf.int64)
    with pytest.raises(ValueError, match=r"`policy`.*'cifar10', 'svhn', 'imagenet'"):
        aa.auto_augment(image, "cifar100", seed)
    with pytest.raises(ValueError, match="`policy`"):
        aa.policy_table("reduced")
    with pytest.raises(ValueError, match="`num_ops`.*positive integer"):
        aa.rand_augment(image, 0, 0.5, seed)
    with pytest.raises(ValueError, match="`num_ops`"):
        aa.rand_augment(image, 1.5, 0.5, seed)
    with pytest.raises(ValueError, match=r"`magnitude`.*\[0.0, 1.0\]"):
        aa.rand_augment(image, 2, 1.5, seed)
    with pytest.raises(ValueError, match="`name`"):
        aa.apply_op(image, "cutout", 0.5)
    with pytest.raises(ValueError, match="`image`.*uint8"):
        aa.auto_augment(tf.zeros([8, 8, 3]), "cifar10", seed)
    with pytest.raises(ValueError, match="`image`.*shape"):
        aa.apply_op(tf.zeros([8, 8], tf.uint8), "invert", 0.0)


# --------------------------------------------------------------------------
# Random draws: one dataset map over many seeds, no image ops
# --------------------------------------------------------------------------

NUM_DRAWS = 5000
# Chi-square critical values at p = 0.001 (the draws are seeded, so a pass
# is repeatable; this only bounds how unlucky the fixed seeds may be).
CHI2_CRITICAL_001 = {13: 34.53, 24: 51.18}


def draws(fn, num=NUM_DRAWS):
    dataset = tf.data.Dataset.range(num).map(lambda i: fn(tf.stack([i, tf.constant(2024, tf.int64)])))
    return {k: v.numpy() for k, v in dataset.batch(num).get_single_element().items()}


def chi_square(counts):
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def within_binomial(successes, trials, p, sigmas=4.5):
    """|rate - p| within `sigmas` standard deviations (exact for p in {0, 1})."""
    return abs(successes - trials * p) <= sigmas * np.sqrt(trials * p * (1 - p)) + 1e-9


@pytest.mark.parametrize("policy", aa.POLICY_NAMES)
def test_auto_augment_draws(policy):
    d = draws(lambda seed: aa.auto_augment_decisions(policy, seed))
    table = aa.policy_table(policy)
    # Sub-policy choice: uniform over the 25.
    counts = np.bincount(d["sub_policy"], minlength=len(table))
    assert len(counts) == len(table)
    assert chi_square(counts) < CHI2_CRITICAL_001[len(table) - 1], counts
    # The ops are the chosen sub-policy's; each applied with its probability,
    # pooled by probability value (binomial, 4.5 sigma; p = 0 / 1 exactly).
    ops = np.array([[aa.OP_NAMES.index(s[1]), aa.OP_NAMES.index(s[4])] for s in table])
    np.testing.assert_array_equal(d["ops"], ops[d["sub_policy"]])
    probabilities = np.array([[s[0], s[3]] for s in table])[d["sub_policy"]]
    for p in np.unique(probabilities):
        chosen = probabilities == p
        assert within_binomial(d["apply"][chosen].sum(), chosen.sum(), p), (p, d["apply"][chosen].mean())
    for k in range(2):  # each slot on its own, against its mean probability
        assert within_binomial(d["apply"][:, k].sum(), NUM_DRAWS, probabilities[:, k].mean())
    # Signs: +-1, each with probability 0.5; independent of the slot.
    assert set(np.unique(d["sign"])) <= {-1.0, 1.0}
    for k in range(2):
        assert within_binomial((d["sign"][:, k] > 0).sum(), NUM_DRAWS, 0.5)
    # The value handed to apply_op: level value, signed / as a factor.
    levels = np.array([[s[2], s[5]] for s in table])[d["sub_policy"]]
    base = aa._LEVEL_VALUES[d["ops"], levels]
    kind = aa._SIGN_KIND[d["ops"]]
    expected = np.where(kind == 1, d["sign"] * base, np.where(kind == 2, 1 + d["sign"] * base, base))
    np.testing.assert_allclose(d["magnitude"], expected, rtol=0, atol=1e-12)


def test_rand_augment_draws():
    d = draws(lambda seed: aa.rand_augment_decisions(3, 0.6, seed))
    assert d["ops"].shape == (NUM_DRAWS, 3)
    counts = np.bincount(d["ops"].ravel(), minlength=len(aa.OP_NAMES))
    assert len(counts) == len(aa.OP_NAMES)
    assert chi_square(counts) < CHI2_CRITICAL_001[len(aa.OP_NAMES) - 1], counts
    assert within_binomial((d["sign"] > 0).sum(), d["sign"].size, 0.5)
    for index, name in enumerate(aa.OP_NAMES):
        values = np.unique(np.abs(d["magnitude"][d["ops"] == index]))
        if name in aa.NO_MAGNITUDE_OPS:
            np.testing.assert_array_equal(values, [0.0])
            continue
        lo, hi = aa.MAGNITUDE_RANGES[name]
        value = lo + 0.6 * (hi - lo)
        if name == "posterize":
            value = 6.0  # round(8 - 0.6 * 4 = 5.6)
        if name in aa.ENHANCE_OPS:  # factors 1 +- value
            np.testing.assert_allclose(sorted(set(np.round(np.abs(values - 1), 12))), [round(value, 12)])
        else:
            np.testing.assert_allclose(values, [value], rtol=1e-12)


# --------------------------------------------------------------------------
# Whole augmentations: determinism, consistency with the draws, tf.data
# --------------------------------------------------------------------------


def replay(image, ops, magnitudes, applied):
    """`apply_op` in sequence, as the draws say."""
    out = tf.constant(image)
    for op, m, a in zip(ops, magnitudes, applied):
        if a:
            out = aa.apply_op(out, aa.OP_NAMES[op], float(m))
    return out.numpy()


@pytest.mark.parametrize("policy", aa.POLICY_NAMES)
def test_auto_augment_deterministic_and_as_drawn(policy):
    image = sample_images()[2]
    seeds = tf.stack([tf.range(24, dtype=tf.int64), tf.fill([24], tf.constant(5, tf.int64))], axis=1)
    dataset = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda seed: (aa.auto_augment(tf.constant(image), policy, seed), aa.auto_augment_decisions(policy, seed))
    )
    outputs, decisions = dataset.batch(24).get_single_element()
    assert outputs.dtype == tf.uint8 and outputs.shape == (24,) + image.shape
    again = dataset.map(lambda out, _: out).batch(24).get_single_element()
    np.testing.assert_array_equal(outputs.numpy(), again.numpy())  # same seed, same image
    # Different seeds give different images. Not all 24: with CIFAR-10's low
    # probabilities many draws apply nothing (or the same op), so a third.
    distinct = {out.tobytes() for out in outputs.numpy()}
    assert len(distinct) >= 8, len(distinct)
    # Each output is the drawn sub-policy applied op by op (and eager = graph).
    for k in range(0, 24, 3):
        expected = replay(image, decisions["ops"][k], decisions["magnitude"][k], decisions["apply"][k])
        np.testing.assert_array_equal(outputs[k].numpy(), expected)
        eager = aa.auto_augment(tf.constant(image), policy, seeds[k])
        np.testing.assert_array_equal(eager.numpy(), expected)


def test_rand_augment_deterministic_and_as_drawn():
    image = sample_images()[0]
    run = tf.function(lambda seed: aa.rand_augment(tf.constant(image), 2, 0.7, seed))
    outputs = [run(tf.constant([k, 9], tf.int64)).numpy() for k in range(12)]
    for k in range(12):
        seed = tf.constant([k, 9], tf.int64)
        np.testing.assert_array_equal(run(seed).numpy(), outputs[k])
        d = aa.rand_augment_decisions(2, 0.7, seed)
        expected = replay(image, d["ops"].numpy(), d["magnitude"].numpy(), [True, True])
        np.testing.assert_array_equal(outputs[k], expected)
    assert len({out.tobytes() for out in outputs}) >= 10
    # int32 seeds work too; the op count is honoured (num_ops = 1, 4).
    assert aa.rand_augment(tf.constant(image), 1, 0.3, tf.constant([1, 2], tf.int32)).dtype == tf.uint8
    assert aa.rand_augment_decisions(4, 0.3, tf.constant([1, 2]))["ops"].shape == (4,)


def test_inside_dataset_map_and_tf_function():
    images = np.stack(sample_images()[0:1] * 8)

    def augment(index, image):
        seed = tf.stack([index, tf.constant(0, tf.int64)])
        a = aa.auto_augment(image, "svhn", seed)
        b = aa.rand_augment(image, 2, 0.5, seed)
        return a, b

    dataset = tf.data.Dataset.from_tensor_slices((tf.range(8, dtype=tf.int64), images))
    dataset = dataset.map(augment, num_parallel_calls=2).batch(4)
    for a, b in dataset:
        assert a.shape == b.shape == (4, 32, 32, 3) and a.dtype == b.dtype == tf.uint8
    assert dataset.element_spec[0].shape.as_list() == [None, 32, 32, 3]

    @tf.function(input_signature=[tf.TensorSpec([24, 40, 3], tf.uint8), tf.TensorSpec([2], tf.int64)])
    def graph(image, seed):
        out = aa.auto_augment(image, "imagenet", seed)
        assert out.shape == (24, 40, 3)  # static shape preserved at trace time
        return aa.rand_augment(out, 3, 1.0, seed)

    out = graph(tf.constant(sample_images()[1]), tf.constant([3, 4], tf.int64))
    assert out.shape == (24, 40, 3) and out.dtype == tf.uint8
