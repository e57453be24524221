import keras
import numpy as np
import pytest

from keras_smallvit.layers import LocalitySelfAttention
from keras_smallvit.layers import MultiHeadSelfAttention
from keras_smallvit.layers import TechniqueSpec
from keras_smallvit.layers import attention as attention_module
from keras_smallvit.layers.attention import use_fused_attention
from keras_smallvit.models.cait.cait_layers import TalkingHeadsAttention
from keras_smallvit.models.swin.swin_layers import WindowAttention
from tests import references as ref
from tests.backend_utils import compiled
from tests.backend_utils import gradients
from tests.contract import MIXED_TOLERANCE
from tests.contract import LayerContract
from tests.contract import as_numpy
from tests.contract import fit_one_step
from tests.contract import wrap_layer

HEADS, HEAD_DIM, TOKENS, DIM = 3, 4, 10, 12
BACKEND = keras.backend.backend()


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


def assert_matches_reference(layer, x, **kwargs):
    """The layer's output and probabilities equal `reference(layer, x, **kwargs)`;
    returns the probabilities."""
    out, probs = layer(x, return_attention_scores=True)
    want_out, want_probs = reference(layer, x, **kwargs)
    np.testing.assert_allclose(as_numpy(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want_out, atol=1e-4)
    return as_numpy(probs)


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
    assert_matches_reference(layer, x)
    assert layer.qkv.bias is None  # no qkv bias, as in the official code


def test_lsa_matches_numpy_reference_with_trained_temperatures():
    x = tokens()
    layer = LocalitySelfAttention(HEADS, HEAD_DIM)
    layer.build(x.shape)
    temperatures = np.array([0.1, 0.5, 1.3], "float32")
    layer.temperature.assign(temperatures)
    assert_matches_reference(layer, x, scale=temperatures, diagonal_mask=True)


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
    assert_matches_reference(layer, x, sata={"threshold": 0.2, "scale": 0.3})


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


# === The papers' ablation options (issue 31), built from the technique spec ===


def from_spec(**fields):
    """The attention a block builds for `TechniqueSpec(**fields)`."""
    return MultiHeadSelfAttention(HEADS, HEAD_DIM, **TechniqueSpec(**fields).attention_options())


def test_diagonal_mask_alone_masks_with_the_fixed_default_scale():
    # SPT/LSA paper Table 4, M-ViT: the diagonal mask, no learned temperature.
    x = tokens() * 3.0
    layer = from_spec(attention="diagonal_mask")
    probs = assert_matches_reference(layer, x, diagonal_mask=True)  # scale head_dim ** -0.5
    assert layer.diagonal_mask and not layer.learnable_temperature
    assert not hasattr(layer, "temperature")
    assert len(layer.trainable_weights) == 3  # qkv kernel, output kernel and bias: no scale
    np.testing.assert_array_equal(np.diagonal(probs, axis1=-2, axis2=-1), 0.0)


def test_learnable_temperature_alone_has_no_mask_and_its_scale_is_learned():
    # SPT/LSA paper Table 4, T-ViT: one learned scale per head, no mask.
    x = tokens()
    layer = from_spec(attention="learnable_temperature")
    layer.build(x.shape)
    assert layer.learnable_temperature and not layer.diagonal_mask
    assert layer.temperature.trainable and any(w is layer.temperature for w in layer.trainable_weights)
    np.testing.assert_allclose(as_numpy(layer.temperature), np.full(HEADS, HEAD_DIM**-0.5), rtol=1e-6)
    temperatures = np.array([0.1, 0.5, 1.3], "float32")
    layer.temperature.assign(temperatures)
    probs = assert_matches_reference(layer, x, scale=temperatures, diagonal_mask=False)
    assert (np.diagonal(probs, axis1=-2, axis2=-1) > 1e-6).all()  # not masked (masked: 0)


@pytest.mark.parametrize("multiple", [1, 2, 3, 4])
@pytest.mark.parametrize("sata", [None, {"threshold": 0.1, "scale": 0.5}])
def test_temperature_multiple_scales_the_softmax_with_and_without_sata(multiple, sata):
    # SATA paper Table 6: tau = tau' / sqrt(D_h), tau' in 1..4, +- SATA.
    x = tokens()
    suppression = None if sata is None else {"threshold": sata["threshold"], "initial_scale": sata["scale"]}
    layer = from_spec(temperature_multiple=multiple, suppression=suppression)
    assert_matches_reference(layer, x, scale=np.full(HEADS, multiple * HEAD_DIM**-0.5), sata=sata)
    assert MultiHeadSelfAttention.from_config(layer.get_config()).temperature_multiple == multiple


def test_temperature_multiple_with_a_learned_temperature_is_its_initial_value():
    # LSA + a temperature multiple: the learned scale starts at k / sqrt(head_dim).
    for attention, mask in (("lsa", True), ("learnable_temperature", False)):
        layer = from_spec(attention=attention, temperature_multiple=2.5)
        layer.build((2, TOKENS, DIM))
        np.testing.assert_allclose(as_numpy(layer.temperature), np.full(HEADS, 2.5 * HEAD_DIM**-0.5), rtol=1e-6)
        assert_matches_reference(layer, tokens(), scale=np.full(HEADS, 2.5 * HEAD_DIM**-0.5), diagonal_mask=mask)


@pytest.mark.parametrize("scale", [0.0, 0.75])
def test_fixed_sata_scale_is_not_trained_and_matches_numpy(scale):
    # SATA paper Tables 3-5: s fixed from the grid (s = 0 included); the
    # temperature-only attention alongside shows that a fit step does train.
    x = tokens()
    suppression = {"threshold": 0.1, "initial_scale": scale, "trainable_scale": False}
    spec = TechniqueSpec.from_names(("sata", "learnable_temperature"), suppression=suppression)
    assert spec.suppression == suppression
    layer = MultiHeadSelfAttention(HEADS, HEAD_DIM, **spec.attention_options())
    layer.build(x.shape)
    s = layer.suppression_layer.sata_scale
    assert not s.trainable and not any(w is s for w in layer.trainable_weights)
    assert as_numpy(s) == np.float32(scale)
    assert_matches_reference(layer, x, scale=as_numpy(layer.temperature), sata={"threshold": 0.1, "scale": scale})
    model, layer = wrap_layer(lambda dtype: MultiHeadSelfAttention(HEADS, HEAD_DIM, **spec.attention_options()), x.shape)
    before = as_numpy(layer.temperature).copy()
    fit_one_step(model, x, optimizer=keras.optimizers.SGD(1.0))
    assert as_numpy(layer.suppression_layer.sata_scale) == np.float32(scale)
    assert np.abs(as_numpy(layer.temperature) - before).max() > 1e-6


@pytest.mark.parametrize(
    "kwargs,argument,allowed",
    [
        ({"attention": "mask"}, "attention", "'standard', 'lsa', 'diagonal_mask', 'learnable_temperature'"),
        ({"temperature_multiple": 0.0}, "temperature_multiple", "(0.0, inf)"),
        ({"temperature_multiple": "2"}, "temperature_multiple", "(0.0, inf)"),
    ],
)
def test_bad_ablation_options_name_the_option_and_the_allowed_values(kwargs, argument, allowed):
    with pytest.raises(ValueError, match=f"`{argument}`") as error:
        TechniqueSpec(**kwargs)
    assert allowed in str(error.value)
    if argument == "temperature_multiple":
        with pytest.raises(ValueError, match=f"`{argument}`"):
            MultiHeadSelfAttention(HEADS, HEAD_DIM, **kwargs)


# === The fused form (issue 30): the same attention as the explicit one ===

# Largest difference fused vs explicit, as a fraction of the explicit
# output's (or gradient's) largest magnitude: float32 round-off; in the half
# types the bias, the probabilities and the products round differently (the
# largest seen: 1.4e-2 in float16, 3e-2 in bfloat16, a temperature's
# gradient), within the contract's half-precision tolerances.
FUSED_TOLERANCE = {"float32": 1e-5, **MIXED_TOLERANCE}


def window_tokens(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 64, DIM)).astype("float32")


FUSED_CASES = {
    # (layer factory, inputs, context)
    # LSA: a learned temperature per head (folded into q) and the diagonal as a boolean mask.
    "lsa": (lambda dtype: LocalitySelfAttention(HEADS, HEAD_DIM, dtype=dtype), tokens, None),
    # Swin's shifted windows with LSA: the relative position bias as `bias`,
    # the shift mask (one per window) and the diagonal written into it.
    "shifted_window_lsa": (
        lambda dtype: WindowAttention(
            HEADS, HEAD_DIM, window_size=4, shift_size=2, grid_size=(8, 8), diagonal_mask=True,
            learnable_temperature=True, use_qkv_bias=True, dtype=dtype,
        ),
        window_tokens,
        None,
    ),
    # Cross attention (class attention without talking heads): one query over the tokens, no mask.
    "context": (lambda dtype: MultiHeadSelfAttention(HEADS, HEAD_DIM, dtype=dtype), lambda: tokens()[:, :1], tokens),
}


def randomize(layer):
    """Weights away from their initial values: the temperatures and the bias table matter."""
    rng = np.random.default_rng(3)
    for variable in layer.weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))


def stateless_forward(layer, **kwargs):
    """`forward(x, weights, mode=False)`: the layer's output (with
    `return_attention_scores=mode`) from NumPy weights."""
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def forward(x, weights, mode=False):
        out, _ = layer.stateless_call(list(weights), non_trainable, x, return_attention_scores=mode, **kwargs)
        return out[0] if mode else out

    return forward


def outputs_and_gradients(layer, x, **kwargs):
    """`(output, gradients to the inputs and to every weight)` as NumPy
    float32; compiled on JAX. The output is the gradient to `probe` of
    `sum(output * probe)`: one compile gives both."""
    forward = stateless_forward(layer, **kwargs)

    def loss(x, probe, *weights):
        return keras.ops.sum(keras.ops.multiply(keras.ops.cast(forward(x, weights), "float32"), probe))

    probe = np.random.default_rng(7).normal(size=x.shape).astype("float32")  # every case keeps the input's shape
    trainable = [as_numpy(v) for v in layer.trainable_variables]
    grads = [np.asarray(g, "float32") for g in gradients(loss, [x, probe] + trainable, jit=True)]
    return grads[1], grads[:1] + grads[2:]


def relative_error(got, want):
    return np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-12)


# float16 on JAX's CPU takes the explicit form both ways (XLA:CPU refuses the
# fused kernel's float16 dots): its float16 cases would compare a form with itself.
POLICIES = ["float32", "mixed_bfloat16"] + ([] if BACKEND == "jax" else ["mixed_float16"])


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", sorted(FUSED_CASES))
def test_fused_attention_equals_the_explicit_form_values_and_gradients(case, policy, monkeypatch):
    # On the CPU, half precision takes the explicit form (slower fused): the
    # kernel is run here anyway, as on an accelerator, to compare the forms.
    monkeypatch.setattr(attention_module, "backend_fuses", lambda dtype, training=None: True)
    factory, inputs, context = FUSED_CASES[case]
    x = inputs()
    kwargs = {} if context is None else {"context": context()}
    layer = factory(policy)
    layer.build(x.shape)
    randomize(layer)
    assert layer.uses_fused_attention(layer.compute_dtype)

    calls = []
    kernel = keras.ops.dot_product_attention
    monkeypatch.setattr(keras.ops, "dot_product_attention", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    got, got_grads = outputs_and_gradients(layer, x, **kwargs)
    assert calls  # the fused kernel ran
    calls.clear()
    with use_fused_attention(False):
        want, want_grads = outputs_and_gradients(layer, x, **kwargs)
    assert not calls
    # A call that returns the maps takes the explicit form.
    forward = stateless_forward(layer, **kwargs)
    (compiled if BACKEND == "jax" else (lambda fn: fn))(lambda x: forward(x, layer.trainable_variables, "all"))(x)
    assert not calls

    tolerance = FUSED_TOLERANCE[policy]
    assert np.isfinite(got).all() and relative_error(got, want) <= tolerance, relative_error(got, want)
    assert len(got_grads) == len(want_grads) == 1 + len(layer.trainable_variables)
    for g, w in zip(got_grads, want_grads):
        assert np.isfinite(g).all() and relative_error(g, w) <= tolerance, relative_error(g, w)


def test_the_cpu_takes_the_explicit_form_in_half_precision_and_jax_in_training():
    layer = LocalitySelfAttention(HEADS, HEAD_DIM, dtype="mixed_float16")
    layer.build((2, TOKENS, DIM))
    device = keras.distribution.list_devices()[0] if BACKEND != "torch" else str(keras.ops.zeros(()).device)
    on_cpu = str(device).lower().startswith("cpu")
    assert layer.uses_fused_attention("float16") == layer.uses_fused_attention("bfloat16") == (not on_cpu)
    assert layer.uses_fused_attention("float32", training=True) == (not on_cpu or BACKEND != "jax")
    assert layer.uses_fused_attention("float32")


def test_the_form_follows_the_configuration():
    x = tokens()
    plain = MultiHeadSelfAttention(HEADS, HEAD_DIM, attention_dropout=0.1)
    plain(x)
    assert plain.uses_fused_attention("float32")
    assert plain.uses_fused_attention("float32", training=False)
    assert not plain.uses_fused_attention("float32", return_maps=True)  # only the explicit form has maps
    assert not plain.uses_fused_attention("float32", training=True)  # dropout on the probabilities
    with use_fused_attention(False):
        assert not plain.uses_fused_attention("float32")
    assert plain.uses_fused_attention("float32")
    sata = MultiHeadSelfAttention(HEADS, HEAD_DIM, suppression=True)
    sata(x)
    assert not sata.uses_fused_attention("float32")
    talking = TalkingHeadsAttention(HEADS, HEAD_DIM)  # head mixing: the explicit form
    talking(x)
    assert not talking.uses_fused_attention("float32")
    assert all(m is not None for m in talking.head_mixing())
    # A subclass changes hooks; overriding none keeps the fused form.
    assert type("Subclass", (MultiHeadSelfAttention,), {})(HEADS, HEAD_DIM).uses_fused_attention("float32")


def test_context_with_diagonal_mask_is_refused():
    with pytest.raises(ValueError, match="`diagonal_mask=True`"):
        LocalitySelfAttention(HEADS, HEAD_DIM)(tokens()[:, :1], context=tokens())
