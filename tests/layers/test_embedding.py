import numpy as np
import pytest

from keras_smallvit.layers import ClassTokenAndPositionEmbedding
from keras_smallvit.models import TokenPooling
from tests.contract import LayerContract
from tests.contract import as_numpy


class TestClassTokenContract(LayerContract):
    input_shape = (2, 6, 8)

    def layer_factory(self, dtype):
        return ClassTokenAndPositionEmbedding(dtype=dtype)


class TestTokenPoolingContract(LayerContract):
    input_shape = (2, 6, 8)
    has_trainable_weights = False

    def layer_factory(self, dtype):
        return TokenPooling("average", dtype=dtype)


def test_class_token_is_prepended_and_positions_added():
    x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")
    layer = ClassTokenAndPositionEmbedding()
    out = as_numpy(layer(x))
    cls, pos = as_numpy(layer.class_token), as_numpy(layer.position_embedding)
    want = np.concatenate([np.broadcast_to(cls, (3, 1, 5)), x], axis=1) + pos
    np.testing.assert_allclose(out, want, atol=1e-6)
    assert pos.shape == (1, 5, 5)


@pytest.mark.parametrize("mode", ["class_token", "average"])
def test_token_pooling(mode):
    x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
    want = x[:, 0] if mode == "class_token" else x[:, 1:].mean(axis=1)
    np.testing.assert_allclose(as_numpy(TokenPooling(mode)(x)), want, atol=1e-6)


def test_bad_pooling_mode_raises():
    with pytest.raises(ValueError, match="`mode`"):
        TokenPooling("max")
