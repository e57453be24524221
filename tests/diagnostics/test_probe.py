"""The attention probe on every backbone family: before/after SATA against the
model's own maps, the per-layer report against NumPy, temperatures, CNNs refused."""

import math

import keras
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit import diagnostics
from tests.contract import BACKEND
from tests.contract import as_numpy

# One tiny model per family, all with LSA (masked diagonal, learned temperature) and SATA.
TINY = {
    "vit": dict(depth=2, hidden_dim=16, num_heads=2, head_dim=8, techniques=("spt", "lsa", "sata", "cb")),
    "pit": dict(hidden_dim=8, depths=(1, 1), num_heads=(1, 2), head_dim=4, patch_size=2, techniques=("lsa", "sata")),
    "swin": dict(hidden_dim=8, depths=(2, 1), num_heads=(1, 2), window_size=4, patch_size=2,
                 techniques=("lsa", "sata")),
    "cait": dict(hidden_dim=16, depth=2, class_depth=1, num_heads=2, head_dim=8, techniques=("lsa", "sata")),
    "t2t": dict(depth=1, hidden_dim=16, num_heads=2, head_dim=8, token_dim=8, techniques=("lsa", "sata")),
}
KINDS = {
    "vit": ["self", "self"],
    "pit": ["self", "self"],
    "swin": ["window", "window", "window"],
    "cait": ["self", "self", "class"],
    "t2t": ["self"],
}


# Under JAX, building a model (eager initialisers) and compiling its probe cost ~10 s per
# family on a 2-core CPU: there, ViT and CaiT (talking heads, class attention) run; the
# other families differ only in NumPy-side layout code, checked on TensorFlow and torch.
FAMILIES = sorted(TINY) if BACKEND != "jax" else ["cait", "vit"]


def images(n=3):
    return np.random.default_rng(0).uniform(size=(n, 16, 16, 3)).astype("float32")


def tiny_model(name):
    model = keras_smallvit.create_model(name, num_classes=3, image_size=16, **TINY[name])
    for block in diagnostics.attention_blocks(model):
        layer = block.attention_layer
        # Sharp attention (large scales) so SATA finds trivial weights; s off its initial value.
        layer.temperature.assign(np.linspace(3.0, 6.0, layer.num_heads).astype("float32"))
        layer.suppression_layer.sata_scale.assign(0.3)
    return model


@pytest.fixture(scope="module")
def probed():
    """`probed(name)` -> `(model, probe)`, each built and probed once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            model = tiny_model(name)
            cache[name] = model, diagnostics.probe_attention(model, images())
        return cache[name]

    return get


@pytest.mark.parametrize("name", FAMILIES)
def test_probe_before_sata_reproduces_the_models_maps(name, probed):
    model, probe = probed(name)
    assert [layer.kind for layer in probe.layers] == KINDS[name]
    for block, layer in zip(diagnostics.attention_blocks(model), probe.layers):
        attention = block.attention_layer
        assert layer.name == block.name
        # "before" is a softmax: rows sum to 1; LSA's diagonal is exactly 0 in self-attention.
        np.testing.assert_allclose(layer.before.sum(axis=-1), 1.0, atol=1e-5)
        if attention.diagonal_mask:
            assert (np.diagonal(layer.before, axis1=-2, axis2=-1) == 0).all()
        # SATA applied to "before" gives the backbone's own attention map.
        suppressed = as_numpy(attention.suppression_layer(layer.before))
        np.testing.assert_allclose(suppressed, layer.after, atol=1e-6)
        if name == "cait":  # talking heads: SATA acts before the post-softmax mixing
            suppressed = np.einsum("bhqk,hg->bgqk", suppressed, as_numpy(attention.post_softmax_mixing))
        np.testing.assert_allclose(suppressed, layer.weights, atol=1e-5)
        assert np.abs(layer.after - layer.before).max() > 1e-3  # SATA did act


def test_probe_forward_pass_is_the_models_inference():
    """The probe's maps and logits equal a plain inference pass's (jit where the backend has it)."""
    model = keras_smallvit.create_model("vit", num_classes=3, image_size=16, **TINY["vit"])
    probe = diagnostics.probe_attention(model, images())
    outputs = model.attention_model().predict(images(), verbose=0)
    np.testing.assert_allclose(probe.logits, outputs["logits"], atol=1e-4)
    for layer, expected in zip(probe.layers, outputs["attention_maps"]):
        np.testing.assert_allclose(layer.weights, expected, atol=1e-5)
    for block in diagnostics.attention_blocks(model):
        assert "masked_softmax" not in vars(block.attention_layer)  # the recorder is gone


@pytest.mark.parametrize("name", ["swin", "cait"] if BACKEND != "jax" else ["cait"])
def test_report_aggregates_rows_per_head_like_numpy(name, probed):
    model, probe = probed(name)
    report = diagnostics.attention_report(model, probe=probe)
    assert len(report["layers"]) == len(probe.layers) and report["num_images"] == 3
    for layer, entry in zip(probe.layers, report["layers"]):
        # Independent aggregation: loop over heads, then every (image[, window], query) row.
        after = np.moveaxis(layer.after, layer.head_axis, 0)
        before = np.moveaxis(layer.before, layer.head_axis, 0)
        num_keys = after.shape[-1]
        for h in range(layer.num_heads):
            rows = after[h].reshape(-1, num_keys).astype(np.float64)
            entropies = []
            for row in rows:
                p = row / row.sum()
                entropies.append(-sum(v * math.log(v) for v in p if v > 0))
            assert entry["num_rows"] == len(rows)
            np.testing.assert_allclose(entry["entropy"]["per_head"][h], np.mean(entropies), rtol=1e-6)
            np.testing.assert_allclose(entry["kl_from_uniform"]["per_head"][h],
                                       math.log(num_keys) - np.mean(entropies), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(entry["normalized_entropy"]["per_head"][h],
                                       np.mean(entropies) / math.log(num_keys), rtol=1e-6)
            raw = before[h].reshape(-1, num_keys).astype(np.float64)
            masks = raw <= layer.threshold * raw.max(axis=-1, keepdims=True)
            np.testing.assert_allclose(entry["trivial"]["mass_before"]["per_head"][h], (raw * masks).sum(-1).mean(),
                                       rtol=1e-6)
            np.testing.assert_allclose(entry["trivial"]["mass_after"]["per_head"][h],
                                       (rows * masks).sum(-1).mean(), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(entry["entropy"]["mean"], np.mean(entry["entropy"]["per_head"]))
        np.testing.assert_allclose(entry["sata"]["scale"], 0.3, rtol=1e-6)
        np.testing.assert_allclose(sum(entry["histogram_before"]), 1.0)
    if name == "swin":
        assert report["class_token"]["last_layer"] is None and "no class token" in report["class_token"]["reason"]
    else:
        assert report["class_token"]["rollout_layers"] == ["patch_block_0", "patch_block_1", "class_block_0"]


def test_temperatures_learned_and_fixed(probed):
    lsa = diagnostics.attention_temperatures(probed("vit")[0])
    assert [t["learnable"] for t in lsa] == [True, True]
    np.testing.assert_allclose(lsa[0]["scale"], [3.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(lsa[0]["tau"], [1 / 3.0, 1 / 6.0], rtol=1e-6)
    np.testing.assert_allclose(lsa[0]["initial_tau"], math.sqrt(8))
    plain = keras_smallvit.create_model("vit", num_classes=3, image_size=16, depth=1, hidden_dim=16, num_heads=2,
                                        head_dim=8)
    (fixed,) = diagnostics.attention_temperatures(plain)
    assert not fixed["learnable"]
    np.testing.assert_allclose(fixed["tau"], [math.sqrt(8)] * 2)
    assert diagnostics.suppression_scales(plain) == [{"name": "block_0", "scale": None, "threshold": None}]


def test_cnns_and_bad_images_are_refused_clearly(probed):
    inputs = keras.Input((16, 16, 3))
    cnn = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(inputs))))
    with pytest.raises(ValueError, match="`model`.*no attention maps.*vit, pit, swin, cait and t2t"):
        diagnostics.probe_attention(cnn, images())
    with pytest.raises(ValueError, match="`model`"):
        diagnostics.AttentionDiagnostics(images(), model=cnn)
    vit = probed("vit")[0]
    with pytest.raises(ValueError, match="`images`"):
        diagnostics.probe_attention(vit, np.zeros((2, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="`images`"):
        diagnostics.attention_report(vit)


def test_callback_on_an_aal_distiller_diagnoses_the_student_and_saves_the_links(probed, tmp_path):
    from keras_smallvit import aal

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="block1_conv")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="block1_bn")(x))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="block2_conv")(x)
    x = keras.layers.BatchNormalization(name="block2_bn")(x)
    teacher = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    distiller = aal.AttentionLinkDistiller(probed("vit")[0], teacher)
    callback = diagnostics.AttentionDiagnostics(images(), run_dir=str(tmp_path))
    callback.set_model(distiller)
    report = callback.diagnose(0)
    assert [layer["name"] for layer in report["layers"]] == ["block_0", "block_1"]  # the student's
    np.testing.assert_allclose(report["aal"]["link_magnitudes"], distiller.link_magnitudes())
    assert report["aal"]["teacher_block_names"] == ["block1", "block2"]
    saved = diagnostics.read_epoch_reports(str(tmp_path))
    assert [r["epoch"] for r in saved] == [1] and saved[0]["aal"] == report["aal"]
