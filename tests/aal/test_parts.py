"""AAL parts without a model: link masks, the loss, the lambda schedule, the
bicubic resize of teacher maps."""

import numpy as np
import pytest
from keras import ops

from keras_smallvit import aal
from keras_smallvit.aal.links import PAPER_LINK_RANGES
from tests.aal import aal_references as ref
from tests.backend_utils import gradients
from tests.contract import as_numpy

# --- links ------------------------------------------------------------------------


# (Few, looping tests: each test's session clean-up costs ~0.5 s on torch.)


def test_paper_depths_give_table_1_exactly():
    for mode in ("alpha", "beta"):
        expected = np.zeros((7, 12), dtype=int)
        for block, (low, high) in enumerate(PAPER_LINK_RANGES[mode]):
            expected[block, low - 1 : high] = 1
        np.testing.assert_array_equal(aal.link_matrix(mode, 7, 12), expected)


def test_selective_links_generalise_by_relative_depth():
    for num_blocks in (1, 2, 3, 4, 5, 7, 9):
        for num_layers in (1, 2, 4, 9, 12, 24):
            alpha = aal.link_matrix("alpha", num_blocks, num_layers)
            beta = aal.link_matrix("beta", num_blocks, num_layers)
            assert alpha.shape == (num_blocks, num_layers)
            assert (alpha.sum(axis=1) >= 1).all() and (beta.sum(axis=1) >= 1).all()  # no block unlinked
            assert alpha[0, 0] == 1 and alpha[-1, -1] == 1  # shallow to shallow, deep to deep
            if num_layers >= 6:  # beta never links the top sixth of the ViT (Table 1: layers 11-12)
                assert beta[:, num_layers - num_layers // 6 :].sum() == 0
            assert (aal.link_matrix("full", num_blocks, num_layers) == 1).all()
    # By hand, 3 teacher blocks and 2 ViT layers: block 1/3 overlaps Table-1
    # rows 1-3 (ViT depth [0, 5/12]), block 2/3 rows 3-5 ([2/12, 6/12]),
    # block 3/3 rows 5-7 ([3/12, 1]).
    np.testing.assert_array_equal(aal.link_matrix("alpha", 3, 2), [[1, 0], [1, 0], [1, 1]])


def test_bad_links_name_the_argument():
    for links in ("gamma", [[1, 0]], [[2, 0], [0, 1]]):
        with pytest.raises(ValueError, match="`links`"):
            aal.link_matrix(links, 2, 2)
    with pytest.raises(ValueError, match="`num_layers`"):
        aal.link_matrix("alpha", 2, 0)


def test_link_magnitudes_average_per_block_and_layer():
    kernel = np.arange(12, dtype="float64").reshape(4, 3) - 5  # 4 inputs, 3 maps
    input_groups, output_groups = [0, 0, 1, 1], [0, 1, 1]
    got = aal.link_magnitudes(kernel, input_groups, output_groups)
    expected = [
        [np.abs(kernel[:2, :1]).mean(), np.abs(kernel[2:, :1]).mean()],
        [np.abs(kernel[:2, 1:]).mean(), np.abs(kernel[2:, 1:]).mean()],
    ]
    np.testing.assert_allclose(got, expected)


# --- loss -------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_matches_numpy_reference(reduction):
    """Random maps with negative values (BatchNorm outputs are signed)."""
    rng = np.random.default_rng(0)
    augmented = rng.normal(size=(3, 4, 5, 6)).astype("float32")
    teacher = rng.normal(size=(3, 4, 5, 6)).astype("float32")
    got = float(as_numpy(aal.attention_link_loss(augmented, teacher, reduction)))
    np.testing.assert_allclose(got, ref.link_loss(augmented, teacher, reduction), rtol=1e-5)
    loss = aal.AttentionLinkLoss(reduction)
    np.testing.assert_allclose(float(as_numpy(loss(teacher, augmented))), got, rtol=1e-6)
    assert aal.AttentionLinkLoss.from_config(loss.get_config()).get_config() == loss.get_config()
    # Scale-free per map (the L2 normalisation), and 0 for matching maps.
    scaled = augmented * rng.uniform(0.1, 10, size=(3, 1, 1, 6)).astype("float32")
    np.testing.assert_allclose(float(as_numpy(aal.attention_link_loss(scaled, teacher, reduction))), got, rtol=1e-4)
    assert float(as_numpy(aal.attention_link_loss(teacher, teacher * 3.0, reduction))) < 1e-10


def test_loss_is_float32_for_half_inputs():
    rng = np.random.default_rng(1)
    augmented = rng.normal(size=(2, 3, 3, 4)).astype("float16")
    teacher = rng.normal(size=(2, 3, 3, 4)).astype("float16")
    loss = aal.attention_link_loss(augmented, teacher)
    assert str(ops.dtype(loss)) == "float32"
    np.testing.assert_allclose(float(as_numpy(loss)), ref.link_loss(augmented, teacher), rtol=1e-5)


def test_all_zero_maps_are_safe():
    rng = np.random.default_rng(2)
    augmented = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    teacher = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    augmented[0, :, :, 1] = 0.0  # a dead augmented map
    teacher[1, :, :, 2] = 0.0  # a dead teacher channel
    loss = float(as_numpy(aal.attention_link_loss(augmented, teacher)))
    np.testing.assert_allclose(loss, ref.link_loss(augmented, teacher), rtol=1e-5)
    (grad,) = gradients(lambda a: aal.attention_link_loss(a, teacher), [augmented])
    assert np.isfinite(grad).all()
    # A dead teacher channel: the normalised map has a constant norm, so no pull.
    np.testing.assert_allclose(grad[1, :, :, 2], 0.0, atol=1e-6)
    assert np.abs(grad[1, :, :, 1]).max() > 1e-3
    zeros = np.zeros_like(augmented)
    assert float(as_numpy(aal.attention_link_loss(zeros, zeros))) == 0.0
    (grad,) = gradients(lambda a: aal.attention_link_loss(a, zeros), [zeros])
    assert np.isfinite(grad).all()


def test_loss_rejects_bad_arguments():
    maps = np.zeros((1, 2, 2, 3), "float32")
    with pytest.raises(ValueError, match="`spatial_reduction`"):
        aal.attention_link_loss(maps, maps, "max")
    with pytest.raises(ValueError, match="`teacher_maps`"):
        aal.attention_link_loss(maps, np.zeros((1, 2, 2, 4), "float32"))


# --- lambda schedule ----------------------------------------------------------------


def test_paper_lambda_schedule():
    # The paper: 2000, x0.99 for the first 200 of 300 epochs, then x0.98.
    values = {e: aal.link_lambda_at(e, 2000.0, aal.DEFAULT_LINK_DECAY, 300) for e in (0, 1, 2, 199, 200, 201, 299)}
    expected = {e: 2000.0 * 0.99 ** min(e, 200) * 0.98 ** max(e - 200, 0) for e in values}
    for epoch in values:
        np.testing.assert_allclose(values[epoch], expected[epoch], rtol=1e-12)
    assert aal.link_lambda_at(5, 10.0, 0.5, 3) == 10.0 * 0.5**5  # one factor for every epoch
    assert aal.parse_link_decay("0.99@0.6667, 0.98") == [(0.99, 0.6667), (0.98, 1.0)]
    assert aal.parse_link_decay([(0.9, 0.5), (0.8, None)]) == [(0.9, 0.5), (0.8, 1.0)]


def test_bad_decay_names_the_argument():
    for decay in ("fast", 1.5, 0.0, "0.9@0.7,0.8@0.5", "0.9@0.5", "0.9@1.2,0.8", True, None):
        with pytest.raises(ValueError, match="`decay`"):
            aal.parse_link_decay(decay)


# --- bicubic resize -------------------------------------------------------------------

SIZES = [((8, 8), (4, 4)), ((8, 8), (3, 5)), ((5, 7), (16, 16)), ((16, 16), (8, 8)), ((4, 4), (8, 8)), ((1, 1), (3, 3))]


def test_resize_matches_direct_2d_bicubic_reference():
    """Against `aal_references.bicubic_resize`, the textbook per-pixel 4x4
    bicubic (a NumPy reference independent of the separable matrices)."""
    for source, target in SIZES:
        image = np.random.default_rng(3).normal(size=source)
        for a in (-0.75, -0.5):
            rows = aal.cubic_resize_matrix(source[0], target[0], a)
            cols = aal.cubic_resize_matrix(source[1], target[1], a)
            np.testing.assert_allclose(rows @ image @ cols.T, ref.bicubic_resize(image, target, a), atol=1e-12)


def test_resize_matches_pytorch_interpolate():
    """PyTorch's `F.interpolate(mode="bicubic", align_corners=False)` (our
    default, the paper's framework) and its antialiased variant: an
    independent C++ implementation, imported whatever the Keras backend."""
    torch = pytest.importorskip("torch")
    for source, target in SIZES:
        image = np.random.default_rng(4).normal(size=source)
        for antialias, a in ((False, -0.75), (True, -0.5)):
            expected = torch.nn.functional.interpolate(
                torch.tensor(image)[None, None], size=target, mode="bicubic", align_corners=False, antialias=antialias
            )[0, 0].numpy()
            got = aal.cubic_resize_matrix(source[0], target[0], a, antialias) @ image
            got = got @ aal.cubic_resize_matrix(source[1], target[1], a, antialias).T
            np.testing.assert_allclose(got, expected, atol=1e-10)


def test_resize_maps_on_the_backend():
    rng = np.random.default_rng(5)
    maps = rng.normal(size=(2, 8, 6, 3)).astype("float32")
    got = as_numpy(aal.resize_maps(maps, (4, 5)))
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(got[b, :, :, c], ref.bicubic_resize(maps[b, :, :, c], (4, 5)), atol=1e-5)
    constant = np.full((1, 7, 7, 2), 3.0, "float32")  # rows of the matrices sum to 1
    np.testing.assert_allclose(as_numpy(aal.resize_maps(constant, (4, 4))), 3.0, rtol=1e-6)
    np.testing.assert_allclose(as_numpy(aal.resize_maps(constant, (3, 3), antialias=True)), 3.0, rtol=1e-6)
