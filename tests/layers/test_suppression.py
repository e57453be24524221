import io
import json
import zipfile

import h5py
import keras
import numpy as np
import pytest

from keras_smallvit.layers import MultiHeadSelfAttention
from keras_smallvit.layers import TrivialAttentionSuppression
from keras_smallvit.layers.suppression import SCALE_NAME
from tests import references as ref
from tests.backend_utils import compiled
from tests.backend_utils import gradients
from tests.contract import LayerContract
from tests.contract import as_numpy


def attention_probs(shape=(2, 3, 17, 17), sharpness=3.0, seed=0):
    logits = np.random.default_rng(seed).normal(size=shape) * sharpness
    return ref.softmax(logits).astype("float32")


class TestContract(LayerContract):
    input_shape = (2, 3, 9, 9)
    mixed_output_dtype = "float32"  # SATA computes in float32 under any policy

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
    layer = TrivialAttentionSuppression(threshold=0.2, initial_scale=0.6)
    layer.build(a.shape)

    def loss(scale, attention):
        out, _ = layer.stateless_call([scale], [], attention)
        return keras.ops.sum(out * upstream)

    grad_s, grad_a = gradients(loss, [layer.sata_scale, a])
    want_a, want_s = ref.twist_grad(a, upstream_np, 0.2, 0.6)
    np.testing.assert_allclose(grad_a, want_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_s, want_s, rtol=1e-4)  # the variable is s itself


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

    for g in gradients(loss, [layer.sata_scale, a]):
        assert np.isfinite(g).all()


def test_scale_is_stored_directly_as_the_float32_variable_sata_scale():
    layer = TrivialAttentionSuppression(initial_scale=0.7, dtype="mixed_float16")
    layer.build((1, 1, 4, 4))
    assert [v.name for v in layer.trainable_weights] == ["sata_scale"] == [SCALE_NAME]
    assert layer.sata_scale.dtype == "float32"
    np.testing.assert_array_equal(as_numpy(layer.sata_scale), np.float32(0.7))
    layer.sata_scale.assign(0.25)
    np.testing.assert_array_equal(as_numpy(layer.scale), np.float32(0.25))
    assert "scale_lr_multiplier" not in layer.get_config()  # no learning rate in the layer
    assert not TrivialAttentionSuppression(trainable_scale=False).trainable_weights


def test_the_old_multiplier_is_no_argument_and_its_configs_load_through_the_upgrader():
    with pytest.raises(ValueError, match="`scale_lr_multiplier`.*learning_rate_multipliers"):
        TrivialAttentionSuppression(initial_scale=0.5, scale_lr_multiplier=0.1)
    today = TrivialAttentionSuppression(initial_scale=0.5).get_config()
    layer = TrivialAttentionSuppression.from_config({**today, "scale_lr_multiplier": 0.1})
    assert layer.get_config() == today  # today's config: `c` stays in the weights' units only


def save_as_legacy_file(path, legacy_path, multiplier, u):
    """Rewrites the `.keras` file of a SATA model as the old layer wrote it:
    `scale_lr_multiplier` in every `suppression` config and the stored SATA
    weight `u` (the old layer's `s` was `multiplier * u`)."""
    with zipfile.ZipFile(path) as source:
        files = {name: source.read(name) for name in source.namelist()}
    config = json.loads(files["config.json"])
    found = []

    def add_multiplier(node):
        if isinstance(node, dict):
            if isinstance(node.get("suppression"), dict):
                node["suppression"]["scale_lr_multiplier"] = multiplier
                found.append(node["suppression"])
            for value in node.values():
                add_multiplier(value)
        elif isinstance(node, list):
            for value in node:
                add_multiplier(value)

    add_multiplier(config)
    assert found
    files["config.json"] = json.dumps(config).encode()
    weights = io.BytesIO(files["model.weights.h5"])
    scales = []
    with h5py.File(weights, "r+") as h5:
        h5.visititems(lambda name, obj: scales.append(obj) if name.endswith("suppression_layer/vars/0") else None)
        assert scales
        for dataset in scales:
            dataset[()] = np.float32(u)
    files["model.weights.h5"] = weights.getvalue()
    with zipfile.ZipFile(legacy_path, "w") as target:
        for name, data in files.items():
            target.writestr(name, data)


def test_model_saved_by_the_old_layer_loads_with_s_equal_to_multiplier_times_u(tmp_path):
    """Old files: `scale_lr_multiplier=c` in the config, `u` stored, `s = c * u`."""
    import keras_smallvit

    multiplier, u = 7e-5 / 3e-3, np.float32(0.3 / (7e-5 / 3e-3))
    s = np.float32(u) * np.float32(multiplier)  # the old layer's float32 product
    model = keras_smallvit.create_model(
        "sata_vit", num_classes=3, image_size=16, depth=1, hidden_dim=16, num_heads=2, head_dim=8
    )
    scale = model.get_layer("vi_t_backbone").get_layer("block_0").attention_layer.suppression_layer
    scale.sata_scale.assign(0.9)
    path, legacy_path = str(tmp_path / "new.keras"), str(tmp_path / "old.keras")
    model.save(path)
    save_as_legacy_file(path, legacy_path, multiplier, u)
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    scale.sata_scale.assign(s)
    expected = as_numpy(model(x))

    legacy = keras.saving.load_model(legacy_path)
    (loaded,) = [v for v in legacy.weights if v.name == SCALE_NAME]
    np.testing.assert_array_equal(as_numpy(loaded), s)
    np.testing.assert_allclose(as_numpy(legacy(x)), expected, rtol=1e-6, atol=1e-7)
    # Saved again, in today's format (s itself, no multiplier), and reloaded: the same s.
    again = str(tmp_path / "again.keras")
    legacy.save(again)
    with zipfile.ZipFile(again) as saved:
        assert b"scale_lr_multiplier" not in saved.read("config.json")
    reloaded = keras.saving.load_model(again)
    np.testing.assert_array_equal(as_numpy([v for v in reloaded.weights if v.name == SCALE_NAME][0]), s)
    np.testing.assert_allclose(as_numpy(reloaded(x)), expected, rtol=1e-6, atol=1e-7)
    # A new file holds s itself and no multiplier.
    new = keras.saving.load_model(path)
    np.testing.assert_array_equal(as_numpy([v for v in new.weights if v.name == SCALE_NAME][0]), np.float32(0.9))


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


@pytest.mark.parametrize("threshold,scale", [(0.1, 0.5), (0.0, 0.5), (0.3, 1.5), (1.0, 0.5)])
def test_suppress_scores_equals_softmax_then_twist_values_and_gradients(threshold, scale):
    # The fused form (what attention runs under XLA) against the NumPy
    # formula on softmax(scores), values and gradients to the scores and s;
    # -65504 on the diagonal as LSA writes it (exact zeros, trivial at t=0).
    rng = np.random.default_rng(2)
    scores = (rng.normal(size=(2, 3, 9, 9)) * 2.5).astype("float32")
    scores[..., np.arange(9), np.arange(9)] = -65504.0
    upstream_np = rng.normal(size=scores.shape).astype("float32")
    upstream = keras.ops.convert_to_tensor(upstream_np)
    layer = TrivialAttentionSuppression(threshold=threshold, initial_scale=scale)
    layer.build(scores.shape)
    probs = ref.softmax(scores.astype("float64"))
    np.testing.assert_allclose(
        as_numpy(layer.suppress_scores(scores)), ref.twist(probs, threshold, scale), rtol=1e-5, atol=1e-7
    )

    def loss(s, x):
        with keras.StatelessScope(state_mapping=[(layer.sata_scale, s)]):
            return keras.ops.sum(layer.suppress_scores(x) * upstream)

    grad_s, grad_scores = gradients(loss, [layer.sata_scale, scores])
    grad_probs, want_s = ref.twist_grad(probs, upstream_np, threshold, scale)
    want_scores = probs * (grad_probs - (grad_probs * probs).sum(-1, keepdims=True))  # softmax's backward
    np.testing.assert_allclose(grad_scores, want_scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_s, want_s, rtol=1e-4)


@pytest.mark.parametrize("path", ["call", "suppress_scores", "attention"])
@pytest.mark.parametrize("run", ["eager", "compiled"])
def test_empty_batch_gives_empty_output_and_finite_scale_gradient(path, run):
    # Keras' max raises on an empty tensor (TF eager, PyTorch): SATA's row
    # maximum must not take it. `attention`: MultiHeadSelfAttention with SATA
    # (fused with the softmax on TF/JAX, `call` on PyTorch).
    if path == "attention":
        layer = MultiHeadSelfAttention(num_heads=2, head_dim=4, suppression=True)
        x = np.random.default_rng(0).normal(size=(0, 5, 8)).astype("float32")
        layer.build(x.shape)
        want = (0, 5, 8)
    else:
        layer = TrivialAttentionSuppression(threshold=0.2, initial_scale=0.7)
        layer.build((None, 3, 9, 9))
        x = attention_probs((0, 3, 9, 9))
        want = x.shape
    forward = layer.suppress_scores if path == "suppress_scores" else layer
    fn = compiled(forward) if run == "compiled" else forward
    out = as_numpy(fn(keras.ops.convert_to_tensor(x)))
    assert out.shape == want and out.dtype == np.float32
    if path == "call" and run == "eager":
        # Backward through the hand-written gradient: a gradient of the
        # input's empty shape, and 0 to `s` (a sum over no rows).
        def loss(scale, attention):
            out, _ = layer.stateless_call([scale], [], attention)
            return keras.ops.sum(out)

        grad_s, grad_a = gradients(loss, [layer.sata_scale, x])
        assert grad_a.shape == x.shape and float(grad_s) == 0.0
    if path == "suppress_scores" and run == "eager":
        (grad_scores,) = gradients(lambda scores: keras.ops.sum(layer.suppress_scores(scores)), [x])
        assert grad_scores.shape == x.shape
