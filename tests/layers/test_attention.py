import keras
import numpy as np
import pytest

from keras_smallvit.layers import LocalitySelfAttention
from keras_smallvit.layers import MultiHeadSelfAttention
from tests import references as ref
from tests.contract import LayerContract
from tests.contract import as_numpy

HEADS, HEAD_DIM, TOKENS, DIM = 3, 4, 10, 12


def tokens(seed=0):
    return np.random.default_rng(seed).normal(size=(2, TOKENS, DIM)).astype("float32")


def reference(layer, x, **kwargs):
    return ref.attention(
        x.astype(np.float64),
        as_numpy(layer.qkv.kernel),
        as_numpy(layer.output_projection.kernel),
        as_numpy(layer.output_projection.bias),
        HEADS,
        HEAD_DIM,
        **kwargs,
    )


class TestMultiHeadContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return MultiHeadSelfAttention(HEADS, HEAD_DIM, suppression=True, dtype=dtype)


class TestLocalityContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return LocalitySelfAttention(HEADS, HEAD_DIM, dropout=0.1, dtype=dtype)


def test_standard_attention_matches_numpy_reference():
    x = tokens()
    layer = MultiHeadSelfAttention(HEADS, HEAD_DIM)
    out, probs = layer(x, return_attention_scores=True)
    want_out, want_probs = reference(layer, x)
    np.testing.assert_allclose(as_numpy(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want_out, atol=1e-4)
    assert layer.qkv.bias is None  # no qkv bias, as in the official code


def test_lsa_matches_numpy_reference_with_trained_temperatures():
    x = tokens()
    layer = LocalitySelfAttention(HEADS, HEAD_DIM)
    layer.build(x.shape)
    temperatures = np.array([0.1, 0.5, 1.3], "float32")
    layer.temperature.assign(temperatures)
    out, probs = layer(x, return_attention_scores=True)
    want_out, want_probs = reference(layer, x, scale=temperatures, diagonal_mask=True)
    np.testing.assert_allclose(as_numpy(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want_out, atol=1e-4)


def test_lsa_without_mask_at_init_equals_standard_attention():
    x = tokens()
    standard = MultiHeadSelfAttention(HEADS, HEAD_DIM)
    lsa = LocalitySelfAttention(HEADS, HEAD_DIM, diagonal_mask=False)
    standard.build(x.shape)
    lsa.build(x.shape)
    for target, source in zip(
        (lsa.qkv.kernel, lsa.output_projection.kernel, lsa.output_projection.bias),
        (standard.qkv.kernel, standard.output_projection.kernel, standard.output_projection.bias),
    ):
        target.assign(source)
    np.testing.assert_allclose(as_numpy(lsa.temperature), np.full(HEADS, HEAD_DIM**-0.5), rtol=1e-6)
    np.testing.assert_allclose(as_numpy(lsa(x)), as_numpy(standard(x)), atol=1e-6)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_lsa_diagonal_is_zero(policy):
    x = tokens() * 30.0  # large activations: the diagonal would dominate unmasked
    layer = LocalitySelfAttention(HEADS, HEAD_DIM, dtype=policy)
    out, probs = layer(x, return_attention_scores=True)
    probs = as_numpy(probs)
    assert probs.dtype == np.float32  # the softmax runs in float32
    diagonal = np.diagonal(probs, axis1=-2, axis2=-1)
    np.testing.assert_array_less(diagonal, 2.0**-10)  # float16 precision
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-3)
    assert np.isfinite(as_numpy(out)).all()


def test_temperature_is_trainable_one_per_head():
    x = tokens()
    layer = LocalitySelfAttention(HEADS, HEAD_DIM)
    layer.build(x.shape)
    assert tuple(layer.temperature.shape) == (HEADS,)
    assert any(w is layer.temperature for w in layer.trainable_weights)
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, np.zeros_like(x), verbose=0, epochs=2)
    moved = as_numpy(layer.temperature) - HEAD_DIM**-0.5
    assert (np.abs(moved) > 1e-4).all()


def test_sata_inside_attention_acts_on_probabilities():
    x = tokens()
    layer = MultiHeadSelfAttention(HEADS, HEAD_DIM, suppression={"threshold": 0.2, "initial_scale": 0.3})
    out, probs = layer(x, return_attention_scores=True)
    want_out, want_probs = reference(layer, x, sata={"threshold": 0.2, "scale": 0.3})
    np.testing.assert_allclose(as_numpy(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want_out, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"head_dim": -4}, "head_dim"),
        ({"dropout": 1.5}, "dropout"),
        ({"suppression": {"threshold": 2.0}}, "threshold"),
        ({"suppression": {"thresh": 0.1}}, "suppression"),
        ({"suppression": "yes"}, "suppression"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    args = {"num_heads": 2, "head_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        MultiHeadSelfAttention(**args)
