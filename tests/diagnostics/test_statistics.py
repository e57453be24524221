"""The attention statistics against independent references on hand-made arrays."""

import math

import numpy as np
import pytest

from keras_smallvit.diagnostics import statistics as st
from keras_smallvit.diagnostics.probe import AttentionProbe
from keras_smallvit.diagnostics.probe import LayerAttention
from keras_smallvit.diagnostics.report import class_token_maps


def reference_entropy(row):
    """Written from the definition, one entry at a time (0 log 0 = 0)."""
    total = sum(row)
    return -sum((p / total) * math.log(p / total) for p in row if p > 0)


def reference_kl_from_uniform(row):
    total, n = sum(row), len(row)
    return sum((p / total) * math.log((p / total) / (1.0 / n)) for p in row if p > 0)


MASKED_DIAGONAL = np.array([[0.0, 0.5, 0.5], [0.2, 0.0, 0.8], [0.6, 0.4, 0.0]])  # LSA rows
UNIFORM = np.full((1, 4), 0.25)
ONE_HOT = np.array([[0.0, 1.0, 0.0, 0.0]])


def test_entropy_kl_and_density_of_hand_made_rows():
    # Masked diagonal: the exact zeros add nothing; the uniform reference spans all 3 keys.
    np.testing.assert_allclose(st.entropy(MASKED_DIAGONAL)[0], math.log(2))
    np.testing.assert_allclose(st.kl_from_uniform(MASKED_DIAGONAL)[0], math.log(3) - math.log(2))
    np.testing.assert_allclose(st.normalized_entropy(MASKED_DIAGONAL)[0], math.log(2) / math.log(3))
    # Uniform: maximal entropy, zero divergence, density 1.
    np.testing.assert_allclose(st.entropy(UNIFORM), [math.log(4)])
    np.testing.assert_allclose(st.kl_from_uniform(UNIFORM), [0.0], atol=1e-12)
    np.testing.assert_allclose(st.normalized_entropy(UNIFORM), [1.0])
    # One-hot: zero entropy, KL = log N.
    np.testing.assert_allclose(st.entropy(ONE_HOT), [0.0], atol=1e-12)
    np.testing.assert_allclose(st.kl_from_uniform(ONE_HOT), [math.log(4)])
    np.testing.assert_allclose(st.normalized_entropy(ONE_HOT), [0.0], atol=1e-12)


def test_statistics_match_the_definitions_on_random_rows_with_zeros():
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.full(7, 0.3), size=(2, 3, 5))
    rows[..., 2] = 0.0  # a masked key in every row
    rows[0, 0, 0] = [0, 0, 0, 1, 0, 0, 0]  # and a one-hot row
    rows = rows * 0.7  # unnormalised, as after SATA
    flat = rows.reshape(-1, 7)
    np.testing.assert_allclose(st.entropy(rows).ravel(), [reference_entropy(r) for r in flat], rtol=1e-12)
    np.testing.assert_allclose(st.kl_from_uniform(rows).ravel(), [reference_kl_from_uniform(r) for r in flat],
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.normalized_entropy(rows).ravel(),
                               [reference_entropy(r) / math.log(7) for r in flat], rtol=1e-12)


def test_rows_are_renormalised_only_when_asked():
    row = np.array([[0.6, 0.2]])  # sums to 0.8 (SATA leaves rows unnormalised)
    np.testing.assert_allclose(st.entropy(row), [-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))])
    np.testing.assert_allclose(st.entropy(row, normalize=False), [-(0.6 * math.log(0.6) + 0.2 * math.log(0.2))])


def test_single_key_is_uniform():
    np.testing.assert_allclose(st.normalized_entropy(np.ones((3, 1))), np.ones(3))
    np.testing.assert_allclose(st.kl_from_uniform(np.ones((3, 1))), np.zeros(3), atol=1e-12)


@pytest.mark.parametrize("bad", [np.array([[0.5, -0.1, 0.6]]), np.array([[np.nan, 1.0]])])
def test_invalid_attention_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="`attention`"):
        st.entropy(bad)


def test_rows_by_head_and_head_means():
    attention = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)  # (B, h, Nq, Nk)
    rows = st.rows_by_head(attention)
    assert rows.shape == (3, 8, 5)
    np.testing.assert_array_equal(rows[1, 4], attention[1, 1, 0])  # image 1, head 1, query 0
    windows = np.arange(2 * 4 * 3 * 5 * 5, dtype=float).reshape(2, 4, 3, 5, 5)  # (B, windows, h, n, n)
    rows = st.rows_by_head(windows, head_axis=2)
    assert rows.shape == (3, 2 * 4 * 5, 5)
    np.testing.assert_array_equal(rows[2, 1 * 20 + 3 * 5 + 4], windows[1, 3, 2, 4])
    np.testing.assert_allclose(st.head_means([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]), [2.0, 4.0])


def test_trivial_attention_of_a_hand_made_row():
    before = np.array([[0.5, 0.3, 0.04, 0.03, 0.02, 0.11], [0.0, 0.4, 0.3, 0.2, 0.05, 0.05]])
    after = np.array([[0.5, 0.3, 0.01, 0.005, 0.002, 0.11], [0.0, 0.4, 0.3, 0.2, 0.01, 0.01]])
    result = st.trivial_attention(before, after, threshold=0.1)
    # Row 0: m = 0.5, trivial <= 0.05: 0.04, 0.03, 0.02. Row 1: m = 0.4, trivial <= 0.04: only the masked 0.
    np.testing.assert_allclose(result["row_max"], [0.5, 0.4])
    np.testing.assert_allclose(result["mass_before"], [0.09, 0.0])
    np.testing.assert_allclose(result["mass_after"], [0.017, 0.0])
    np.testing.assert_allclose(result["fraction_trivial"], [3 / 6, 1 / 6])
    loose = st.trivial_attention(before, threshold=0.5)  # row 1: <= 0.2 -> 0, 0.2, 0.05, 0.05
    np.testing.assert_allclose(loose["mass_before"], [0.09 + 0.11, 0.3])
    assert "mass_after" not in loose
    with pytest.raises(ValueError, match="`threshold`"):
        st.trivial_attention(before, threshold=1.5)


def test_trivial_mass_can_exceed_the_row_max():
    """SATA's Figure 1 point: many small weights outweigh the largest one."""
    row = np.full((1, 101), 0.9 / 100)
    row[0, 0] = 0.1
    result = st.trivial_attention(row, threshold=0.1)
    assert result["mass_before"][0] == pytest.approx(0.9) and result["row_max"][0] == pytest.approx(0.1)


def test_histogram_bins():
    values = np.array([0.0, 5e-7, 1e-6, 0.9, 1.0, 1.2])  # last bin: [10 ** -0.25, 1]
    fractions = st.attention_histogram(values)
    assert fractions.shape == (len(st.HISTOGRAM_EDGES) - 1,)
    np.testing.assert_allclose(fractions.sum(), 1.0)
    np.testing.assert_allclose(fractions[0], 2 / 6)  # 0 and 5e-7 in [0, 1e-6)
    np.testing.assert_allclose(fractions[1], 1 / 6)  # 1e-6 in the first log bin
    np.testing.assert_allclose(fractions[-1], 3 / 6)  # 0.9, 1.0 and 1.2 (clipped) in the last
    edges = [0.0, 0.5, 1.0]
    np.testing.assert_allclose(st.attention_histogram([0.1, 0.2, 0.7], edges), [2 / 3, 1 / 3])


def test_rollout_by_hand():
    # Layer 1 (one head): A + I = [[1.2, .8], [.6, 1.4]] -> rows / 2.
    layer_1 = np.array([[[[0.2, 0.8], [0.6, 0.4]]]])
    # Layer 2 (two heads averaging to 0.5 everywhere): (A + I) / 2 = [[.75, .25], [.25, .75]].
    layer_2 = np.array([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]])
    rollout = st.attention_rollout([layer_1, layer_2])
    # [[.75, .25], [.25, .75]] @ [[.6, .4], [.3, .7]]
    np.testing.assert_allclose(rollout[0], [[0.525, 0.475], [0.375, 0.625]])
    np.testing.assert_allclose(st.attention_rollout([layer_1])[0], [[0.6, 0.4], [0.3, 0.7]])
    np.testing.assert_allclose(st.attention_rollout([layer_1], add_identity=False)[0], layer_1[0, 0])


def test_rollout_matches_a_loop_reference_and_keeps_rows_stochastic():
    rng = np.random.default_rng(1)
    maps = [rng.dirichlet(np.ones(5), size=(2, 3, 5)) for _ in range(3)]
    expected = np.stack([np.eye(5)] * 2)
    for layer in maps:
        for b in range(2):
            a = layer[b].mean(axis=0) + np.eye(5)
            a = a / a.sum(axis=1, keepdims=True)
            expected[b] = a @ expected[b]
    rollout = st.attention_rollout(maps)
    np.testing.assert_allclose(rollout, expected)
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0)


def test_rollout_rejects_mismatched_layers():
    with pytest.raises(ValueError, match="`attention_maps"):
        st.attention_rollout([])
    with pytest.raises(ValueError, match=r"`attention_maps\[1\]`"):
        st.attention_rollout([np.ones((1, 1, 3, 3)) / 3, np.ones((1, 1, 4, 4)) / 4])


def _layer(index, kind, stage, prefix, grid, after):
    after = np.asarray(after, dtype=np.float32)
    return LayerAttention(index, f"layer_{index}", kind, stage, prefix, grid, after, after, after, False, None)


def test_class_token_maps_of_a_vit_like_probe():
    # 1 class token + a 1x2 grid; two layers, one head.
    a1 = np.array([[0.0, 0.5, 0.5], [0.2, 0.0, 0.8], [0.6, 0.4, 0.0]])
    a2 = np.array([[0.0, 0.9, 0.1], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    probe = AttentionProbe("Test", np.zeros((1, 2, 4, 3)), None,
                           [_layer(0, "self", 0, 1, (1, 2), a1[None, None]),
                            _layer(1, "self", 0, 1, (1, 2), a2[None, None])],
                           (1, 2))
    maps = class_token_maps(probe)
    np.testing.assert_allclose(maps["last_layer"][0], [[0.9, 0.1]], rtol=1e-6)
    hat = lambda a: (a + np.eye(3)) / (a + np.eye(3)).sum(axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(maps["rollout"][0], (hat(a2) @ hat(a1))[0, 1:][None], rtol=1e-6)
    assert maps["rollout_layers"] == ["layer_0", "layer_1"] and maps["reason"] is None


def test_class_token_rollout_of_a_cait_like_probe_by_hand():
    # Patch layer over 2 patches (no class token), then a class-attention layer.
    patch = np.array([[[[0.5, 0.5], [0.2, 0.8]]]])
    cls = np.array([[[[0.8, 0.2]]]])
    probe = AttentionProbe("Test", np.zeros((1, 4, 8, 3)), None,
                           [_layer(0, "self", 0, 0, (1, 2), patch), _layer(1, "class", 1, 0, (1, 2), cls)], (1, 2))
    maps = class_token_maps(probe)
    np.testing.assert_allclose(maps["last_layer"][0], [[0.8, 0.2]], rtol=1e-6)
    # Over [cls, p1, p2]: patch layer [[1,0,0],[0,.75,.25],[0,.1,.9]]; class layer row 0 = [.5,.4,.1];
    # the class row of the product: .5 [1,0,0] + .4 [0,.75,.25] + .1 [0,.1,.9] = [.5, .31, .19].
    np.testing.assert_allclose(maps["rollout"][0], [[0.31, 0.19]], rtol=1e-6)


def test_pit_like_rollout_stays_in_the_last_stage_and_window_attention_has_none():
    first = np.full((1, 1, 5, 5), 0.2)
    last = np.array([[[[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]]])
    probe = AttentionProbe("Test", np.zeros((1, 4, 4, 3)), None,
                           [_layer(0, "self", 0, 1, (2, 2), first), _layer(1, "self", 1, 1, (1, 2), last)], (2, 2))
    maps = class_token_maps(probe)
    assert maps["rollout_layers"] == ["layer_1"] and maps["rollout"].shape == (1, 1, 2)
    windows = AttentionProbe("Test", np.zeros((1, 4, 4, 3)), None,
                             [_layer(0, "window", 0, 0, (2, 2), np.full((1, 1, 1, 4, 4), 0.25))], None)
    maps = class_token_maps(windows)
    assert maps["last_layer"] is None and maps["rollout"] is None and "no class token" in maps["reason"]
