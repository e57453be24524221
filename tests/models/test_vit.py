
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.models import ImageClassifier
from keras_smallvit.models import ViTBackbone
from keras_smallvit.models import class_token_attention
from tests import references as ref
from tests.contract import ARCHITECTURE_ONLY
from tests.contract import ModelContract
from tests.contract import as_numpy
from tests.contract import with_techniques

TINY = dict(image_size=16, patch_size=4, hidden_dim=16, depth=2, num_heads=2, head_dim=8)
ALL_TECHNIQUES = dict(
    tokenizer="spt",
    attention="lsa",
    suppression={"threshold": 0.1, "initial_scale": 0.5},
    context_broadcasting={"ratio": 0.5},
)


def tiny_classifier(num_classes=5, dtype=None, **kwargs):
    backbone = ViTBackbone(**with_techniques({**TINY, **ALL_TECHNIQUES, **kwargs}), dtype=dtype)
    return ImageClassifier(backbone, num_classes)


def data(n=8, num_classes=5):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 16, 16, 3)).astype("float32"), rng.integers(0, num_classes, size=(n,))


# Parameter counts of the authors' official PyTorch code for the same config.
@pytest.mark.large
@ARCHITECTURE_ONLY
@pytest.mark.parametrize(
    "name,image_size,num_classes,official",
    [
        ("vit", 32, 100, 2_709_796),
        ("sl_vit", 32, 100, 2_747_248),
        ("vit", 64, 200, 2_756_744),
        ("sl_vit", 64, 200, 2_906_228),
    ],
)
def test_parameter_counts_equal_official_code(name, image_size, num_classes, official):
    model = keras_smallvit.create_model(name, num_classes=num_classes, image_size=image_size)
    assert model.count_params() == official


def test_backbone_config_round_trip():
    backbone = ViTBackbone(**with_techniques({**TINY, **ALL_TECHNIQUES}), drop_path_rate=0.1, seed=4)
    config = backbone.get_config()
    restored = ViTBackbone.from_config(config)
    assert restored.get_config() == config
    assert restored.count_params() == backbone.count_params()


def test_classifier_config_round_trip():
    model = ImageClassifier(ViTBackbone(**with_techniques({**TINY, **ALL_TECHNIQUES})), 5, head_dropout=0.1)  # a head argument
    config = model.get_config()
    restored = ImageClassifier.from_config(config)
    assert restored.get_config() == config


class TestClassifier(ModelContract):
    half_layers = ("block_0",)

    def model_factory(self, dtype=None, **kwargs):
        return tiny_classifier(dtype=dtype, **kwargs)


def test_attention_maps_come_from_the_same_forward_pass():
    model = tiny_classifier()
    x, _ = data(2)
    outputs = model.attention_model()(x)
    np.testing.assert_allclose(as_numpy(outputs["logits"]), as_numpy(model(x)), atol=1e-6)
    maps = [as_numpy(m) for m in outputs["attention_maps"]]
    assert len(maps) == TINY["depth"]
    for m in maps:
        assert m.shape == (2, TINY["num_heads"], 17, 17)
        np.testing.assert_array_equal(np.diagonal(m, axis1=-2, axis2=-1), 0.0)  # LSA
    cls_maps = [as_numpy(m) for m in outputs["class_token_attention"]]
    for m, c in zip(maps, cls_maps):
        assert c.shape == (2, TINY["num_heads"], 4, 4)
        np.testing.assert_array_equal(c, m[:, :, 0, 1:].reshape(2, TINY["num_heads"], 4, 4))
    np.testing.assert_array_equal(as_numpy(class_token_attention(outputs["attention_maps"][0], (4, 4))), cls_maps[0])


def test_classifier_matches_numpy_reference():
    # Tokenizer, class token, position embedding, blocks and head, all in NumPy.
    model = tiny_classifier(tokenizer="patch", attention="standard", suppression=None)
    x, _ = data(2)
    backbone = model.backbone
    w = lambda v: as_numpy(v).astype(np.float64)  # noqa: E731
    tok = backbone.get_layer("tokenizer")
    emb = backbone.get_layer("embedding")
    h = ref.patches(x.astype(np.float64), 4) @ w(tok.projection.kernel) + w(tok.projection.bias)
    h = np.concatenate([np.broadcast_to(w(emb.class_token), (2, 1, 16)), h], axis=1) + w(emb.position_embedding)
    for i in range(TINY["depth"]):
        h = ref.block_reference(backbone.get_layer(f"block_{i}"), h, cb_position="mlp_output", ratio=0.5)
    h = ref.layer_norm(h[:, 0], w(model.head_norm.gamma), w(model.head_norm.beta))
    want = h @ w(model.classifier.kernel) + w(model.classifier.bias)
    np.testing.assert_allclose(as_numpy(model(x)), want, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"image_size": 30}, "image_size"),
        ({"tokenizer": "conv"}, "tokenizer"),
        ({"attention": "linear"}, "attention"),
        ({"shift_directions": "up"}, "shift_directions"),
        ({"suppression": {"threshold": 1.5}}, "threshold"),
        ({"context_broadcasting": {"ratio": -0.5}}, "ratio"),
        ({"embedding_dropout": -0.5}, "embedding_dropout"),
        ({"depth": 0}, "depth"),
    ],
)
def test_bad_backbone_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}"):
        ViTBackbone(**with_techniques({**TINY, **kwargs}))
