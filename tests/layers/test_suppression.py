import keras
import numpy as np
import pytest

from keras_smallvit.layers import TrivialAttentionSuppression
from tests import references as ref
from tests.backend_utils import gradients
from tests.contract import LayerContract
from tests.contract import as_numpy


def attention_probs(shape=(2, 3, 17, 17), sharpness=3.0, seed=0):
    logits = np.random.default_rng(seed).normal(size=shape) * sharpness
    return ref.softmax(logits).astype("float32")


class TestContract(LayerContract):
    input_shape = (2, 3, 9, 9)

    def layer_factory(self, dtype):
        return TrivialAttentionSuppression(threshold=0.2, initial_scale=0.7, dtype=dtype)

    def input_data(self):
        return attention_probs(self.input_shape)


@pytest.mark.parametrize("threshold,scale", [(0.1, 0.5), (0.05, 1.0), (0.3, 0.2), (1.0, 0.5)])
def test_matches_numpy_formula(threshold, scale):
    a = attention_probs()
    layer = TrivialAttentionSuppression(threshold=threshold, initial_scale=scale)
    np.testing.assert_allclose(as_numpy(layer(a)), ref.twist(a, threshold, scale), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1.0, 2.0])
def test_lemma_1_trivial_mass_bounded_by_s_times_row_max(scale):
    a = attention_probs(sharpness=1.5)
    out = as_numpy(TrivialAttentionSuppression(threshold=0.1, initial_scale=scale)(a))
    trivial = a <= 0.1 * a.max(-1, keepdims=True)
    assert trivial.any()
    trivial_mass = (out * trivial).sum(-1)
    assert (trivial_mass <= scale * a.max(-1) + 1e-6).all()
    if scale <= 1.0:
        assert (out[trivial] <= a[trivial] + 1e-7).all()


def test_non_trivial_entries_unchanged_and_rows_not_renormalised():
    a = attention_probs()
    out = as_numpy(TrivialAttentionSuppression(threshold=0.1, initial_scale=0.5)(a))
    non_trivial = a > 0.1 * a.max(-1, keepdims=True)
    np.testing.assert_array_equal(out[non_trivial], a[non_trivial])
    assert (out.sum(-1) < 1.0 - 1e-4).any()


def test_gradients_reach_attention_and_scale_not_the_mask():
    a = attention_probs(shape=(2, 2, 7, 7), sharpness=1.5)
    upstream_np = np.random.default_rng(1).normal(size=a.shape).astype("float32")
    upstream = keras.ops.convert_to_tensor(upstream_np)
    layer = TrivialAttentionSuppression(threshold=0.2, initial_scale=0.6, scale_lr_multiplier=0.5)
    layer.build(a.shape)

    def loss(scale_parameter, attention):
        out, _ = layer.stateless_call([scale_parameter], [], attention)
        return keras.ops.sum(out * upstream)

    grad_u, grad_a = gradients(loss, [layer.scale_parameter, a])
    want_a, want_s = ref.twist_grad(a, upstream_np, 0.2, 0.6)
    np.testing.assert_allclose(grad_a, want_a, rtol=1e-4, atol=1e-5)
    # s = 0.5 * u, so dL/du = 0.5 * dL/ds.
    np.testing.assert_allclose(grad_u, 0.5 * want_s, rtol=1e-4)


@pytest.mark.parametrize(
    "row",
    [
        np.full(8, 1 / 8),  # all equal: nothing trivial
        np.eye(8)[3],  # one-hot: trivial entries are all zero
        np.array([0.5, 0.5, 0, 0, 0, 0, 0, 0]),
        np.array([0.3, 0.25, 0.25, 0.2, 0, 0, 0, 0]),  # no trivial mass at t=0.1
    ],
)
def test_no_nan_in_values_or_gradients_on_degenerate_rows(row):
    a = np.tile(row.astype("float32"), (1, 1, 8, 1))
    layer = TrivialAttentionSuppression()
    layer.build(a.shape)
    out = as_numpy(layer(a))
    assert np.isfinite(out).all()

    def loss(u, attention):
        return keras.ops.sum(layer.stateless_call([u], [], attention)[0])

    for g in gradients(loss, [layer.scale_parameter, a]):
        assert np.isfinite(g).all()


def test_scale_moves_at_its_own_learning_rate_under_adam():
    lr, multiplier = 1e-2, 0.1
    layer = TrivialAttentionSuppression(initial_scale=0.5, scale_lr_multiplier=multiplier)
    layer.build((1, 1, 4, 4))
    np.testing.assert_allclose(as_numpy(layer.scale), 0.5, rtol=1e-6)
    optimizer = keras.optimizers.Adam(lr)
    optimizer.apply_gradients([(keras.ops.ones(()), layer.scale_parameter)])
    # Adam's first step moves u by lr (sign of the gradient), so s by multiplier * lr.
    np.testing.assert_allclose(0.5 - as_numpy(layer.scale), multiplier * lr, rtol=1e-3)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"initial_scale": -1.0}, "initial_scale"),
        ({"scale_lr_multiplier": 0.0}, "scale_lr_multiplier"),
        ({"epsilon": 0.0}, "epsilon"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        TrivialAttentionSuppression(**kwargs)
