import numpy as np
import pytest

from keras_smallvit.layers import StochasticDepth
from tests.contract import LayerContract
from tests.contract import as_numpy


class TestContract(LayerContract):
    input_shape = (4, 5, 6)
    has_trainable_weights = False

    def layer_factory(self, dtype):
        return StochasticDepth(0.3, seed=1, dtype=dtype)


def test_identity_at_inference():
    x = np.random.default_rng(0).normal(size=(8, 3, 4)).astype("float32")
    np.testing.assert_array_equal(as_numpy(StochasticDepth(0.5)(x)), x)


def test_drops_whole_samples_at_rate_and_keeps_expectation():
    rate = 0.25
    x = np.ones((4000, 2, 3), "float32")
    out = as_numpy(StochasticDepth(rate, seed=3)(x, training=True))
    per_sample = out.reshape(len(x), -1)
    kept = per_sample[:, 0] > 0
    # Each sample is all zeros or all 1/(1-rate).
    np.testing.assert_allclose(per_sample[kept], 1 / (1 - rate), rtol=1e-6)
    np.testing.assert_array_equal(per_sample[~kept], 0.0)
    assert abs((~kept).mean() - rate) < 0.03
    assert abs(out.mean() - 1.0) < 0.05


def test_seeded_layers_repeat():
    x = np.ones((64, 2), "float32")
    a = as_numpy(StochasticDepth(0.5, seed=7)(x, training=True))
    b = as_numpy(StochasticDepth(0.5, seed=7)(x, training=True))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_bad_rate_raises(rate):
    with pytest.raises(ValueError, match="`rate`"):
        StochasticDepth(rate)
