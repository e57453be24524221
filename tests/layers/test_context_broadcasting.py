import numpy as np
import pytest

from keras_smallvit.layers import ContextBroadcasting
from tests import references as ref
from tests.contract import LayerContract
from tests.contract import as_numpy


def tokens():
    return np.random.default_rng(0).normal(size=(2, 9, 8)).astype("float32")


class TestContract(LayerContract):
    input_shape = (2, 9, 8)
    has_trainable_weights = False

    def layer_factory(self, dtype):
        return ContextBroadcasting(0.3, dtype=dtype)


class TestLearnableScaleContract(LayerContract):
    input_shape = (2, 9, 8)

    def layer_factory(self, dtype):
        return ContextBroadcasting(0.5, learnable_scale=True, dtype=dtype)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_equals_formula_and_uniform_attention(ratio):
    x = tokens()
    out = as_numpy(ContextBroadcasting(ratio)(x))
    np.testing.assert_allclose(out, ref.context_broadcast(x, ratio), atol=1e-6)
    # Uniform attention: every token attends 1/N to every token (class token included).
    n = x.shape[1]
    uniform = np.full((n, n), 1.0 / n)
    np.testing.assert_allclose(out, (1 - ratio) * x + ratio * (uniform @ x), atol=1e-6)


def test_learnable_scale_starts_as_cb_and_scales_the_mean():
    x = tokens()
    layer = ContextBroadcasting(0.5, learnable_scale=True)
    np.testing.assert_allclose(as_numpy(layer(x)), ref.context_broadcast(x, 0.5), atol=1e-6)
    gamma = np.linspace(-1, 2, 8).astype("float32")
    layer.channel_scale.assign(gamma)
    np.testing.assert_allclose(as_numpy(layer(x)), ref.context_broadcast(x, 0.5, gamma), atol=1e-6)


@pytest.mark.parametrize("ratio", [-0.5, 1.5])
def test_bad_ratio_raises(ratio):
    with pytest.raises(ValueError, match="`ratio`"):
        ContextBroadcasting(ratio)
