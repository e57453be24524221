
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.layers import ShiftedPatchTokenization
from keras_smallvit.layers import TransformerBlock
from keras_smallvit.models import ImageClassifier
from keras_smallvit.models import PiTBackbone
from keras_smallvit.models.pit import DepthwiseConvPooling
from keras_smallvit.models.backbone import default_patch_size
from tests import references as ref
from tests.contract import ARCHITECTURE_ONLY
from tests.contract import LayerContract
from tests.contract import ModelContract
from tests.contract import as_numpy
from tests.contract import with_techniques

# 16 px, patch 2: grids 8x8 and 4x4; widths 8-16; heads of 4. THREE_STAGES
# adds a 2x2 stage of width 32.
TINY = dict(image_size=16, patch_size=2, hidden_dim=8, depths=(1, 1), num_heads=(1, 2), head_dim=4)
THREE_STAGES = dict(TINY, depths=(1, 1, 1), num_heads=(1, 2, 2))
SL_SATA_CB = dict(
    tokenizer="spt",
    attention="lsa",
    suppression={"threshold": 0.1, "initial_scale": 0.5},
    context_broadcasting={"ratio": 0.5},
)


def w(v):
    return as_numpy(v).astype(np.float64)


def torch_conv_output_size(n, kernel=3, stride=2, padding=1):
    """`conv_output_size` of the official code (PyTorch Conv2d arithmetic)."""
    return int((n - kernel + 2 * padding) / stride + 1)


def np_conv_pooling(layer, x, grid, num_prefix=1):
    """PyTorch-style pooling with loops: symmetric zero padding 1, 3x3 stride-2
    grouped conv (output channel o reads input channel o // m), 1x1 conv, and the
    class token through its own Dense."""
    b, _, c = x.shape
    h, wd = grid
    g = np.pad(x[:, num_prefix:].reshape(b, h, wd, c), ((0, 0), (1, 1), (1, 1), (0, 0)))
    kernel, bias = w(layer.depthwise.kernel), w(layer.depthwise.bias)  # (3, 3, C, m), (C * m,)
    m = kernel.shape[-1]
    oh, ow = torch_conv_output_size(h), torch_conv_output_size(wd)
    out = np.zeros((b, oh, ow, c * m))
    for i in range(oh):
        for j in range(ow):
            for o in range(c * m):
                patch = g[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, o // m]
                out[:, i, j, o] = (patch * kernel[:, :, o // m, o % m]).sum(axis=(1, 2)) + bias[o]
    out = out.reshape(b, oh * ow, c * m) @ w(layer.pointwise.kernel) + w(layer.pointwise.bias)
    if not num_prefix:
        return out
    prefix = x[:, :num_prefix] @ w(layer.prefix_projection.kernel) + w(layer.prefix_projection.bias)
    return np.concatenate([prefix, out], axis=1)


def np_spt_pooling(layer, x, side):
    b, _, c = x.shape
    feats = ref.spt_features(x[:, 1:].reshape(b, side, side, c), 2, layer.shift_directions, layer.shift)
    feats = ref.layer_norm(feats, w(layer.layer_norm.gamma), w(layer.layer_norm.beta))
    visual = feats @ w(layer.projection.kernel) + w(layer.projection.bias)
    cls = x[:, :1] @ w(layer.prefix_projection.kernel) + w(layer.prefix_projection.bias)
    return np.concatenate([cls, visual], axis=1)


def sequence(grid=(8, 8), c=8, prefix=1, seed=0):
    return np.random.default_rng(seed).normal(size=(2, prefix + grid[0] * grid[1], c)).astype("float32")


# === Depthwise-convolution pooling ===


class TestDepthwiseConvPoolingContract(LayerContract):
    input_shape = (2, 65, 8)

    def layer_factory(self, dtype):
        return DepthwiseConvPooling(dtype=dtype)


def test_conv_pooling_matches_pytorch_style_numpy_reference_and_shapes():
    for grid, prefix in [((8, 8), 1), ((7, 7), 1), ((6, 10), 1), ((4, 4), 0)]:
        x = sequence(grid, prefix=prefix)
        layer = DepthwiseConvPooling(16, grid_size=grid, num_prefix_tokens=prefix)
        out = as_numpy(layer(x))
        side_h, side_w = torch_conv_output_size(grid[0]), torch_conv_output_size(grid[1])
        assert out.shape == (2, prefix + side_h * side_w, 16)
        assert layer.compute_output_shape(x.shape) == out.shape
        assert as_numpy(layer.depthwise.kernel).shape == (3, 3, 8, 2)  # 2 outputs per input channel
        np.testing.assert_allclose(out, np_conv_pooling(layer, x.astype(np.float64), grid, prefix), atol=1e-5)


def test_conv_pooling_rejects_a_width_that_is_not_a_multiple():
    with pytest.raises(ValueError, match="`output_dim`"):
        DepthwiseConvPooling(12).build((None, 65, 8))


# === Backbone and classifier ===


def tiny_classifier(num_classes=5, dtype=None, **kwargs):
    backbone = PiTBackbone(**with_techniques({**TINY, **SL_SATA_CB, **kwargs}), dtype=dtype)
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
        ("pit", 32, 100, 7_007_236),
        ("sl_pit", 32, 100, 8_676_664),
        ("pit", 64, 200, 7_049_192),
        ("sl_pit", 64, 200, 8_732_804),
    ],
)
def test_parameter_counts_equal_official_code(name, image_size, num_classes, official):
    model = keras_smallvit.create_model(name, num_classes=num_classes, image_size=image_size)
    assert model.count_params() == official


def test_registry_variants_switch_techniques_by_arguments():
    entries = keras_smallvit.list_models(details=True)
    assert [entries[n].techniques for n in ("pit", "sl_pit", "sata_pit", "cb_pit")] == [
        (), ("spt", "lsa"), ("sata",), ("cb",)
    ]
    assert all(entries[n].paper_lr == 1e-3 for n in ("pit", "sl_pit", "sata_pit", "cb_pit"))
    assert default_patch_size(32, 16) == (2, 2) and default_patch_size(64, 16) == (4, 4)  # 16x16 tokens
    model = keras_smallvit.create_model(
        "pit", num_classes=10, image_size=16, techniques=("spt", "lsa", "sata", "cb"),
        **{k: v for k, v in TINY.items() if k != "image_size"},
    )
    backbone = model.backbone
    assert (backbone.techniques.tokenizer, backbone.downsampling, backbone.techniques.attention) == ("spt", "spt", "lsa")
    assert backbone.techniques.suppression == {"threshold": 0.1, "initial_scale": 0.5}  # SATA paper, PiT
    assert backbone.techniques.context_broadcasting == {"ratio": 0.5}
    assert model.pooling == "class_token" and backbone.num_prefix_tokens == 1


def test_backbone_structure_follows_official_code():
    backbone = PiTBackbone(**TINY, drop_path_rate=0.1, techniques={"suppression": True, "context_broadcasting": True})
    assert backbone.stage_grid_sizes == ((8, 8), (4, 4))
    assert isinstance(backbone.get_layer("pooling_0"), DepthwiseConvPooling)
    blocks = [layer for layer in backbone.layers if isinstance(layer, TransformerBlock)]
    assert len(blocks) == 2
    for block in blocks:  # SATA and CB in every block, one drop-path rate
        assert block.techniques.suppression is not None and block.techniques.context_broadcasting is not None
        assert block.drop_path_rate == 0.1 and not block.use_qkv_bias
    sl = PiTBackbone(**TINY, techniques={"tokenizer": "spt"})
    pool = sl.get_layer("pooling_0")
    assert isinstance(pool, ShiftedPatchTokenization) and pool.num_prefix_tokens == 1 and pool.shift == 1
    # Depthwise pooling keeps odd grids like PyTorch's padding=1, stride 2.
    odd = PiTBackbone(**{**TINY, "image_size": 14})
    assert odd.stage_grid_sizes == ((7, 7), (4, 4))


def test_backbone_config_round_trip():
    backbone = PiTBackbone(**with_techniques({**TINY, **SL_SATA_CB}), drop_path_rate=0.1, seed=4)
    config = backbone.get_config()
    restored = PiTBackbone.from_config(config)
    assert restored.get_config() == config
    assert restored.count_params() == backbone.count_params()


class TestClassifier(ModelContract):
    mixed_kwargs = {"downsampling": "conv"}  # the depthwise-conv pooling under float16
    half_layers = ("stage_1_block_0",)

    def model_factory(self, dtype=None, **kwargs):
        return tiny_classifier(dtype=dtype, **kwargs)


def test_attention_maps_and_class_token_maps_per_stage():
    model = tiny_classifier()
    x, _ = data(4)
    outputs = model.attention_model()(x)
    np.testing.assert_allclose(as_numpy(outputs["logits"]), as_numpy(model(x)), atol=1e-6)
    maps = [as_numpy(m) for m in outputs["attention_maps"]]
    assert [m.shape for m in maps] == [(4, 1, 65, 65), (4, 2, 17, 17)]
    cls_maps = [as_numpy(m) for m in outputs["class_token_attention"]]
    for m, c, side in zip(maps, cls_maps, (8, 4)):
        np.testing.assert_array_equal(np.diagonal(m, axis1=-2, axis2=-1), 0.0)  # LSA, class token included
        np.testing.assert_array_equal(c, m[:, :, 0, 1:].reshape(4, -1, side, side))


@pytest.mark.parametrize("techniques", ["plain_cb", "sl_sata"])
def test_classifier_matches_numpy_reference(techniques):
    # Tokenizer, class token + position embedding, blocks, pooling and head, all in NumPy.
    if techniques == "plain_cb":
        kwargs = dict(tokenizer="patch", attention="standard", suppression=None, context_broadcasting={"ratio": 0.5})
        block_kwargs = dict(cb_position="mlp_output", ratio=0.5)
    else:
        kwargs = dict(tokenizer="spt", attention="lsa", suppression={"threshold": 0.1, "initial_scale": 0.5},
                      context_broadcasting=None)
        block_kwargs = dict(lsa=True, sata={"threshold": 0.1, "scale": 0.5})
    model = tiny_classifier(**kwargs)
    backbone = model.backbone
    x, _ = data(4)
    x64 = x.astype(np.float64)
    tok, emb = backbone.get_layer("tokenizer"), backbone.get_layer("embedding")
    if techniques == "plain_cb":
        h = ref.patches(x64, 2) @ w(tok.projection.kernel) + w(tok.projection.bias)
    else:
        feats = ref.spt_features(x64, 2, "diagonal", 1)
        h = ref.layer_norm(feats, w(tok.layer_norm.gamma), w(tok.layer_norm.beta))
        h = h @ w(tok.projection.kernel) + w(tok.projection.bias)
    h = np.concatenate([np.broadcast_to(w(emb.class_token), (4, 1, 8)), h], axis=1) + w(emb.position_embedding)
    side = 8
    for stage in range(len(TINY["depths"])):
        h = ref.block_reference(backbone.get_layer(f"stage_{stage}_block_0"), h, **block_kwargs)
        if stage < len(TINY["depths"]) - 1:
            pool = backbone.get_layer(f"pooling_{stage}")
            h = np_conv_pooling(pool, h, (side, side)) if techniques == "plain_cb" else np_spt_pooling(pool, h, side)
            side //= 2
    h = ref.layer_norm(h[:, 0], w(model.head_norm.gamma), w(model.head_norm.beta))
    want = h @ w(model.classifier.kernel) + w(model.classifier.bias)
    np.testing.assert_allclose(as_numpy(model(x)), want, atol=1e-4)


def test_bad_backbone_arguments_raise_value_error_naming_them():
    # One test (not parametrized): every test pays a session clear on teardown.
    for kwargs, argument in [
        ({"image_size": 17}, "image_size"),
        ({"image_size": 12, "tokenizer": "spt"}, "image_size"),  # grid 6 -> 3: SPT pooling needs even grids
        ({"tokenizer": "conv"}, "tokenizer"),
        ({"downsampling": "average"}, "downsampling"),
        ({"attention": "linear"}, "attention"),
        ({"num_heads": (1, 2)}, "num_heads"),
        ({"depths": (1, 0, 1)}, "depths"),
        ({"suppression": {"threshold": 1.5}}, "threshold"),
        ({"context_broadcasting": {"ratio": -0.5}}, "ratio"),
        ({"embedding_dropout": -0.5}, "embedding_dropout"),
    ]:
        with pytest.raises(ValueError, match=f"`{argument}"):
            PiTBackbone(**with_techniques({**THREE_STAGES, **kwargs}))
