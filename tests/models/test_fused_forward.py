"""The classifiers compute no attention map in `predict`/`fit` (issue 30):
the backbone's graph calls its blocks without maps, so attention without
SATA or head mixing takes the fused form, and `attention_model()` builds the
maps on the same layers with logits equal to the classifier's."""

import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.diagnostics import attention_blocks
from keras_smallvit.layers.attention import ATTENTION_MAPS
from tests.contract import inference

# LSA without SATA, tiny: every attention fuses (the diagonal as a mask; in
# Swin the relative position bias and the shift masks; T2T's token
# transformer with its value skip). PiT's blocks are ViT's; CaiT's talking
# heads always take the explicit form (its logits equal its attention
# model's: tests/models/test_cait.py).
FAMILIES = {
    "sl_vit": dict(depth=2, hidden_dim=16, num_heads=2, head_dim=8),
    "sl_swin": dict(hidden_dim=8, depths=(2, 1), num_heads=(1, 2), window_size=4),
    "sl_t2t": dict(depth=1, hidden_dim=16, num_heads=2, head_dim=8, token_dim=8),
}


def images(n=3):
    return np.random.default_rng(0).uniform(size=(n, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_classifier_predicts_the_logits_of_its_attention_model(name):
    model = keras_smallvit.create_model(name, num_classes=4, image_size=32, **FAMILIES[name])
    assert list(model.backbone.output) == ["sequence_output"]  # no map in the classifier's graph
    layers = [block.attention_layer for block in attention_blocks(model)]
    assert layers and all(layer.uses_fused_attention(layer.compute_dtype) for layer in layers)

    x = images()
    logits = inference(model, x)
    outputs = inference(model.attention_model("all"), x)
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5, rtol=1e-5)
    maps = outputs["attention_maps"]
    assert len(maps) == len(layers)
    assert all(sorted(m) == sorted(ATTENTION_MAPS) for m in maps)
    # Without SATA the maps after it are the softmax.
    for m in maps:
        np.testing.assert_array_equal(m["after_suppression"], m["before_suppression"])
        np.testing.assert_allclose(m["before_suppression"].sum(-1), 1.0, atol=1e-5)


def test_attention_model_shares_the_layers_and_weights():
    model = keras_smallvit.create_model("sl_vit", num_classes=4, image_size=32, **FAMILIES["sl_vit"])
    for mode in (True, "all"):
        network = model.backbone.attention_model(mode)
        assert {id(v) for v in network.weights} == {id(v) for v in model.backbone.weights}
        assert len(network.output["attention_maps"]) == FAMILIES["sl_vit"]["depth"]
    with pytest.raises(ValueError, match="`return_attention_scores`"):
        model.backbone.attention_model(False)
