import numpy as np
import pytest

from keras_smallvit.layers import TransformerBlock
from tests.references import block_reference
from tests.contract import LayerContract
from tests.contract import as_numpy
from tests.contract import with_techniques

HEADS, HEAD_DIM, DIM = 2, 4, 8


def tokens():
    return np.random.default_rng(0).normal(size=(2, 5, DIM)).astype("float32")


class TestContract(LayerContract):
    input_shape = (2, 5, DIM)

    def layer_factory(self, dtype):
        return TransformerBlock(
            HEADS,
            HEAD_DIM,
            techniques={"attention": "lsa", "suppression": True, "context_broadcasting": True},
            drop_path_rate=0.1,
            dropout=0.1,
            seed=3,
            dtype=dtype,
        )


@pytest.mark.parametrize("position", ["mlp_output", "attention_output", "block_output"])
def test_block_with_cb_matches_numpy_reference(position):
    x = tokens()
    block = TransformerBlock(
        HEADS, HEAD_DIM, techniques={"context_broadcasting": {"ratio": 0.3}, "context_broadcasting_position": position}
    )
    out = as_numpy(block(x))
    np.testing.assert_allclose(out, block_reference(block, x.astype(np.float64), position, 0.3), atol=1e-4)


def test_block_with_lsa_and_sata_matches_numpy_reference():
    x = tokens()
    block = TransformerBlock(
        HEADS, HEAD_DIM, techniques={"attention": "lsa", "suppression": {"threshold": 0.3, "initial_scale": 0.4}}
    )
    out, probs = block(x, return_attention_scores=True)
    want = block_reference(block, x.astype(np.float64), lsa=True, sata={"threshold": 0.3, "scale": 0.4})
    np.testing.assert_allclose(as_numpy(out), want, atol=1e-4)
    assert as_numpy(probs).shape == (2, HEADS, 5, 5)


def test_drop_path_only_in_training():
    x = tokens()
    block = TransformerBlock(HEADS, HEAD_DIM, drop_path_rate=0.5, seed=1)
    np.testing.assert_allclose(as_numpy(block(x)), block_reference(block, x.astype(np.float64)), atol=1e-4)
    assert not np.allclose(as_numpy(block(x, training=True)), as_numpy(block(x)))


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"attention": "local"}, "attention"),
        ({"context_broadcasting_position": "input"}, "context_broadcasting_position"),
        ({"context_broadcasting": {"ratio": -1.0}}, "ratio"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        TransformerBlock(HEADS, HEAD_DIM, **with_techniques(kwargs))
