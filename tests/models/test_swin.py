
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.layers import ShiftedPatchTokenization
from keras_smallvit.models import ImageClassifier
from keras_smallvit.models import SwinBackbone
from keras_smallvit.models.swin import AbsolutePositionEmbedding
from keras_smallvit.models.swin import PatchMerging
from keras_smallvit.models.swin import SwinTransformerBlock
from keras_smallvit.models.swin import WindowAttention
from keras_smallvit.models.swin.swin_layers import relative_position_index
from keras_smallvit.models.swin.swin_layers import shifted_window_mask
from keras_smallvit.models.swin.swin_layers import window_partition
from keras_smallvit.models.swin.swin_layers import window_reverse
from tests import references as ref
from tests.contract import ARCHITECTURE_ONLY
from tests.contract import LayerContract
from tests.contract import ModelContract
from tests.contract import as_numpy
from tests.contract import with_techniques

# 16 px, patch 2: grids 8x8 (window 4, shift 2 in block 1) and 4x4 (one 4x4
# window); widths 8-16. THREE_STAGES adds a 2x2 stage (one 2x2 window).
TINY = dict(image_size=16, patch_size=2, hidden_dim=8, depths=(2, 1), num_heads=(1, 2), window_size=4)
THREE_STAGES = dict(TINY, depths=(2, 1, 1), num_heads=(1, 2, 2))
SL_SATA_CB = dict(
    tokenizer="spt",
    attention="lsa",
    suppression={"threshold": 0.1, "initial_scale": 0.5},
    context_broadcasting={"ratio": 0.5},
)


def w(v):
    return as_numpy(v).astype(np.float64)


# === NumPy references, written from the Swin paper / official code's definitions ===


def np_window_partition(x, ws):
    """Windows in row-major order, tokens row-major inside, with explicit loops."""
    b, h, wd, c = x.shape
    out = []
    for i in range(b):
        for wi in range(h // ws):
            for wj in range(wd // ws):
                out.append(x[i, wi * ws : (wi + 1) * ws, wj * ws : (wj + 1) * ws].reshape(ws * ws, c))
    return np.stack(out)


def np_relative_position_index(ws):
    n = ws * ws
    index = np.zeros((n, n), int)
    for i in range(n):
        for j in range(n):
            dy, dx = i // ws - j // ws, i % ws - j % ws
            index[i, j] = (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)
    return index


def np_shift_mask(grid, ws, shift):
    """True where two tokens of a rolled window were not neighbours in the image:
    exactly one of them wrapped around the border (per axis) in the cyclic shift."""
    h, wd = grid
    masks = []
    for wi in range(h // ws):
        for wj in range(wd // ws):
            cells = [(wi * ws + t // ws, wj * ws + t % ws) for t in range(ws * ws)]
            wrapped = [(r + shift >= h, c + shift >= wd) for r, c in cells]
            masks.append([[wrapped[a] != wrapped[b] for b in range(ws * ws)] for a in range(ws * ws)])
    return np.array(masks)


def np_window_attention(layer, x, grid, sata=None):
    """Shifted-window attention from the layer's weights: roll, per-window
    attention with relative bias, shift mask and LSA, roll back."""
    b, _, c = x.shape
    h, wd = grid
    ws, shift, heads, d = layer.window_size, layer.shift_size, layer.num_heads, layer.head_dim
    n = ws * ws
    g = np.roll(x.reshape(b, h, wd, c), (-shift, -shift), axis=(1, 2))
    bias = w(layer.relative_position_bias_table)[np_relative_position_index(ws)]  # (n, n, heads)
    scale = w(layer.temperature) if layer.learnable_temperature else np.full(heads, d**-0.5)
    qkv_bias = w(layer.qkv.bias) if layer.use_qkv_bias else 0.0
    out = np.zeros((b, h, wd, heads * d))
    all_probs = np.zeros((b, (h // ws) * (wd // ws), heads, n, n))
    for i in range(b):
        for wi in range(h // ws):
            for wj in range(wd // ws):
                window = wi * (wd // ws) + wj
                tokens = g[i, wi * ws : (wi + 1) * ws, wj * ws : (wj + 1) * ws].reshape(n, c)
                qkv = tokens @ w(layer.qkv.kernel) + qkv_bias
                q, k, v = [qkv[:, t * heads * d : (t + 1) * heads * d].reshape(n, heads, d) for t in range(3)]
                cells = [(wi * ws + t // ws, wj * ws + t % ws) for t in range(n)]
                wrapped = [(shift and r + shift >= h, shift and col + shift >= wd) for r, col in cells]
                for head in range(heads):
                    scores = (q[:, head] * scale[head]) @ k[:, head].T + bias[:, :, head]
                    for a in range(n):
                        for bb in range(n):
                            if wrapped[a] != wrapped[bb] or (layer.diagonal_mask and a == bb):
                                scores[a, bb] = -np.inf
                    probs = ref.softmax(scores)
                    if sata is not None:
                        probs = ref.twist(probs, sata["threshold"], sata["scale"])
                    all_probs[i, window, head] = probs
                    o = (probs @ v[:, head]).reshape(ws, ws, d)
                    out[i, wi * ws : (wi + 1) * ws, wj * ws : (wj + 1) * ws, head * d : (head + 1) * d] = o
    out = np.roll(out, (shift, shift), axis=(1, 2)).reshape(b, h * wd, heads * d)
    out = out @ w(layer.output_projection.kernel) + w(layer.output_projection.bias)
    return out, all_probs


def np_patch_merging(layer, x, grid):
    b, _, c = x.shape
    g = x.reshape(b, *grid, c)
    merged = np.concatenate([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], axis=-1)
    merged = merged.reshape(b, -1, 4 * c)
    merged = ref.layer_norm(merged, w(layer.layer_norm.gamma), w(layer.layer_norm.beta))
    return merged @ w(layer.reduction.kernel)


def np_spt(layer, grid):
    feats = ref.spt_features(grid, layer.patch_size[0], layer.shift_directions, layer.shift)
    feats = ref.layer_norm(feats, w(layer.layer_norm.gamma), w(layer.layer_norm.beta))
    return feats @ w(layer.projection.kernel) + w(layer.projection.bias)


def np_swin_block(block, x, grid, sata=None, cb_ratio=None):
    h = ref.layer_norm(x, w(block.attention_norm.gamma), w(block.attention_norm.beta))
    x = x + np_window_attention(block.attention_layer, h, grid, sata)[0]
    h = ref.layer_norm(x, w(block.mlp_norm.gamma), w(block.mlp_norm.beta))
    h = ref.gelu(h @ w(block.mlp_dense_1.kernel) + w(block.mlp_dense_1.bias))
    h = h @ w(block.mlp_dense_2.kernel) + w(block.mlp_dense_2.bias)
    if cb_ratio is not None:
        h = ref.context_broadcast(h, cb_ratio)  # mean over all tokens of the image
    return x + h


def tokens(b=2, grid=(8, 8), c=8, seed=0):
    return np.random.default_rng(seed).normal(size=(b, grid[0] * grid[1], c)).astype("float32")


def randomize_bias_table(layer):
    table = layer.relative_position_bias_table
    table.assign(np.random.default_rng(5).normal(size=table.shape).astype("float32"))


# === Window helpers ===


def test_window_partition_and_reverse_match_numpy_and_invert_each_other():
    x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype("float32")
    windows = as_numpy(window_partition(x, 4))
    np.testing.assert_array_equal(windows, np_window_partition(x, 4))
    np.testing.assert_array_equal(as_numpy(window_reverse(windows, 4, 8, 12)), x)


def test_relative_position_index_matches_numpy():
    for ws in (2, 4, 7):
        index = relative_position_index(ws)
        np.testing.assert_array_equal(index, np_relative_position_index(ws))
        assert index.min() == 0 and index.max() == (2 * ws - 1) ** 2 - 1
        np.testing.assert_array_equal(np.diagonal(index), (ws - 1) * (2 * ws - 1) + ws - 1)  # zero offset


def test_shifted_window_mask_matches_wraparound_reference():
    for grid, ws, shift in [((8, 8), 4, 2), ((16, 16), 4, 2), ((8, 12), 4, 1), ((12, 12), 6, 3), ((4, 4), 4, 2)]:
        mask = shifted_window_mask(grid, ws, shift)
        np.testing.assert_array_equal(mask, np_shift_mask(grid, ws, shift))
        # Only the last window row / column mixes wrapped tokens.
        per_window = mask.reshape(grid[0] // ws, grid[1] // ws, ws * ws, ws * ws).any(axis=(-1, -2))
        assert not per_window[:-1, :-1].any() and per_window[-1, -1]


# === Layers ===


# Contracts on a 4x4 grid: one 4x4 window shifted by 2 (four 2x2 regions).
class TestWindowAttentionContract(LayerContract):
    input_shape = (2, 64, 8)  # an 8x8 grid: four windows, each its own shift mask

    def layer_factory(self, dtype):
        # No SATA: the fused form (the bias, the shift mask per window, the
        # diagonal) through the contract; SATA's windows are the block's below.
        return WindowAttention(
            2, 4, window_size=4, shift_size=2, diagonal_mask=True, learnable_temperature=True,
            use_qkv_bias=True, dtype=dtype,
        )


class TestSwinBlockContract(LayerContract):
    input_shape = (2, 16, 8)

    def layer_factory(self, dtype):
        return SwinTransformerBlock(
            2, 4, window_size=4, shift_size=2, techniques={"attention": "lsa", "suppression": True, "context_broadcasting": True},
            drop_path_rate=0.1, dropout=0.1, seed=2, dtype=dtype,
        )


class TestPatchMergingContract(LayerContract):
    input_shape = (2, 16, 8)

    def layer_factory(self, dtype):
        return PatchMerging(dtype=dtype)


class TestAbsolutePositionEmbeddingContract(LayerContract):
    input_shape = (2, 16, 8)

    def layer_factory(self, dtype):
        return AbsolutePositionEmbedding(dtype=dtype)


@pytest.mark.parametrize(
    "grid,shift,lsa,sata",
    [
        ((8, 8), 0, False, None),
        ((8, 8), 2, False, None),
        ((8, 12), 2, True, {"threshold": 0.2, "scale": 0.4}),
    ],
)
def test_window_attention_matches_numpy_reference(grid, shift, lsa, sata):
    x = tokens(grid=grid)
    layer = WindowAttention(
        2, 4, window_size=4, shift_size=shift, grid_size=grid, diagonal_mask=lsa, learnable_temperature=lsa,
        use_qkv_bias=True,
        suppression=None if sata is None else {"threshold": sata["threshold"], "initial_scale": sata["scale"]},
    )
    layer.build(x.shape)
    randomize_bias_table(layer)
    if lsa:
        layer.temperature.assign(np.array([0.3, 0.9], "float32"))
    out, probs = layer(x, return_attention_scores=True)
    want_out, want_probs = np_window_attention(layer, x.astype(np.float64), grid, sata)
    np.testing.assert_allclose(as_numpy(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want_out, atol=1e-4)
    probs = as_numpy(probs)
    if shift:
        masked = np.broadcast_to(shifted_window_mask(grid, 4, shift)[None, :, None], probs.shape)
        np.testing.assert_array_equal(probs[masked], 0.0)
    if lsa:
        np.testing.assert_array_equal(np.diagonal(probs, axis1=-2, axis2=-1), 0.0)
    if sata is None:
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_window_attention_rejects_lsa_with_one_token_regions():
    layer = WindowAttention(1, 4, window_size=2, shift_size=1, diagonal_mask=True)
    with pytest.raises(ValueError, match="`shift_size`"):
        layer.build((None, 16, 4))


def test_patch_merging_matches_official_slicing_order():
    x = tokens(grid=(4, 6), c=3)
    layer = PatchMerging(grid_size=(4, 6))
    out = as_numpy(layer(x))
    assert out.shape == (2, 6, 6) and layer.reduction.bias is None
    np.testing.assert_allclose(out, np_patch_merging(layer, x.astype(np.float64), (4, 6)), atol=1e-5)


def test_swin_block_with_cb_matches_numpy_reference():
    x = tokens()
    block = SwinTransformerBlock(2, 4, window_size=4, shift_size=2, techniques={"context_broadcasting": {"ratio": 0.3}})
    block.build(x.shape)
    randomize_bias_table(block.attention_layer)
    out, probs = block(x, return_attention_scores=True)
    want = np_swin_block(block, x.astype(np.float64), (8, 8), cb_ratio=0.3)
    np.testing.assert_allclose(as_numpy(out), want, atol=1e-4)
    assert as_numpy(probs).shape == (2, 4, 2, 16, 16)


def test_bad_window_arguments_raise_value_error_naming_them():
    for kwargs, argument in [
        ({"window_size": 0}, "window_size"),
        ({"shift_size": 4}, "shift_size"),
        ({"grid_size": (2, 2, 2)}, "grid_size"),
    ]:
        with pytest.raises(ValueError, match=f"`{argument}`"):
            WindowAttention(2, 4, **{"window_size": 4, **kwargs})
        with pytest.raises(ValueError, match=f"`{argument}`"):
            SwinTransformerBlock(2, 4, **kwargs)


# === Backbone and classifier ===


def tiny_classifier(num_classes=5, dtype=None, **kwargs):
    backbone = SwinBackbone(**with_techniques({**TINY, **SL_SATA_CB, **kwargs}), dtype=dtype)
    return ImageClassifier(backbone, num_classes, pooling="average", norm_before_pooling=True)


def data(n=8, num_classes=5):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 16, 16, 3)).astype("float32"), rng.integers(0, num_classes, size=(n,))


# Parameter counts of the authors' official PyTorch code for the same config.
@pytest.mark.large
@ARCHITECTURE_ONLY
@pytest.mark.parametrize(
    "name,image_size,num_classes,official",
    [
        ("swin", 32, 100, 7_107_838),
        ("sl_swin", 32, 100, 8_596_816),
        ("swin", 64, 200, 7_149_794),
        ("sl_swin", 64, 200, 8_652_956),
    ],
)
def test_parameter_counts_equal_official_code(name, image_size, num_classes, official):
    model = keras_smallvit.create_model(name, num_classes=num_classes, image_size=image_size)
    assert model.count_params() == official


def test_registry_variants_switch_techniques_by_arguments():
    entries = keras_smallvit.list_models(details=True)
    assert [entries[n].techniques for n in ("swin", "sl_swin", "sata_swin", "cb_swin")] == [
        (), ("spt", "lsa"), ("sata",), ("cb",)
    ]
    assert all(entries[n].paper_lr == 1e-3 for n in ("swin", "sl_swin", "sata_swin", "cb_swin"))
    model = keras_smallvit.create_model(
        "swin", num_classes=10, image_size=16, techniques=("spt", "lsa", "sata", "cb"),
        **{k: v for k, v in TINY.items() if k != "image_size"},
    )
    backbone = model.backbone
    assert (backbone.techniques.tokenizer, backbone.downsampling, backbone.techniques.attention) == ("spt", "spt", "lsa")
    assert backbone.techniques.suppression == {"threshold": 0.1, "initial_scale": 0.5}
    assert backbone.techniques.context_broadcasting == {"ratio": 0.5}
    assert model.pooling == "average" and model.norm_before_pooling and backbone.num_prefix_tokens == 0


def test_backbone_structure_follows_official_rules():
    backbone = SwinBackbone(**{**THREE_STAGES, "drop_path_rate": 0.3})
    names = ("stage_0_block_0", "stage_0_block_1", "stage_1_block_0", "stage_2_block_0")
    blocks = [backbone.get_layer(n) for n in names]
    assert [(b.window_size, b.shift_size) for b in blocks] == [(4, 0), (4, 2), (4, 0), (2, 0)]
    np.testing.assert_allclose([b.drop_path_rate for b in blocks], [0.0, 0.1, 0.2, 0.3])
    assert isinstance(backbone.get_layer("downsampling_0"), PatchMerging)
    sl = SwinBackbone(**TINY, techniques={"tokenizer": "spt"})
    layer = sl.get_layer("downsampling_0")
    assert isinstance(layer, ShiftedPatchTokenization) and layer.num_prefix_tokens == 0 and layer.shift == 1


def test_backbone_config_round_trip():
    backbone = SwinBackbone(**with_techniques({**TINY, **SL_SATA_CB}), drop_path_rate=0.1, seed=4)
    config = backbone.get_config()
    restored = SwinBackbone.from_config(config)
    assert restored.get_config() == config
    assert restored.count_params() == backbone.count_params()


class TestClassifier(ModelContract):
    # One block per stage keeps the float16 XLA compile short; shifted windows
    # under mixed precision are covered by TestSwinBlockContract.
    mixed_kwargs = {"depths": (1, 1)}
    half_layers = ("stage_0_block_0",)

    def model_factory(self, dtype=None, **kwargs):
        return tiny_classifier(dtype=dtype, **kwargs)


def test_attention_maps_come_from_the_same_forward_pass_and_have_no_class_token_maps():
    model = tiny_classifier()
    x, _ = data(4)
    outputs = model.attention_model()(x)
    assert "class_token_attention" not in outputs
    assert model.backbone.class_token_attention(outputs["attention_maps"]) is None
    np.testing.assert_allclose(as_numpy(outputs["logits"]), as_numpy(model(x)), atol=1e-6)
    shapes = [as_numpy(m).shape for m in outputs["attention_maps"]]
    assert shapes == [(4, 4, 1, 16, 16), (4, 4, 1, 16, 16), (4, 1, 2, 16, 16)]
    for m in outputs["attention_maps"]:
        np.testing.assert_array_equal(np.diagonal(as_numpy(m), axis1=-2, axis2=-1), 0.0)  # LSA in every window


@pytest.mark.parametrize("techniques", ["plain_cb", "sl_sata"])
def test_classifier_matches_numpy_reference(techniques):
    # Tokenizer, position embedding, (shifted) window blocks, downsampling and
    # the head (LayerNorm on every token, average, Dense), all in NumPy.
    if techniques == "plain_cb":
        kwargs = dict(tokenizer="patch", attention="standard", suppression=None, context_broadcasting={"ratio": 0.5})
        sata, cb = None, 0.5
    else:
        kwargs = dict(tokenizer="spt", attention="lsa", suppression={"threshold": 0.1, "initial_scale": 0.5},
                      context_broadcasting=None)
        sata, cb = {"threshold": 0.1, "scale": 0.5}, None
    model = tiny_classifier(**kwargs)
    backbone = model.backbone
    for layer in backbone.layers:
        if isinstance(layer, SwinTransformerBlock):
            randomize_bias_table(layer.attention_layer)
    x, _ = data(4)
    x64 = x.astype(np.float64)
    tok = backbone.get_layer("tokenizer")
    if techniques == "plain_cb":
        h = ref.patches(x64, 2) @ w(tok.projection.kernel) + w(tok.projection.bias)
        norm = backbone.get_layer("tokenizer_norm")
        h = ref.layer_norm(h, w(norm.gamma), w(norm.beta))
    else:
        h = np_spt(tok, x64)
    h = h + w(backbone.get_layer("position_embedding").position_embedding)
    grid = 8
    for stage, depth in enumerate(TINY["depths"]):
        for i in range(depth):
            h = np_swin_block(backbone.get_layer(f"stage_{stage}_block_{i}"), h, (grid, grid), sata, cb)
        if stage < len(TINY["depths"]) - 1:
            down = backbone.get_layer(f"downsampling_{stage}")
            if techniques == "plain_cb":
                h = np_patch_merging(down, h, (grid, grid))
            else:
                h = np_spt(down, h.reshape(len(x), grid, grid, -1))
            grid //= 2
    h = ref.layer_norm(h, w(model.head_norm.gamma), w(model.head_norm.beta)).mean(axis=1)
    want = h @ w(model.classifier.kernel) + w(model.classifier.bias)
    np.testing.assert_allclose(as_numpy(model(x)), want, atol=1e-4)


def test_norm_before_pooling_differs_from_norm_after_pooling():
    # Same weights, two heads: the official Swin head normalises every token first.
    backbone = SwinBackbone(**TINY)
    before = ImageClassifier(backbone, 3, pooling="average", norm_before_pooling=True)
    after = ImageClassifier(backbone, 3, pooling="average")
    after.set_weights(before.get_weights())
    x, _ = data(4)
    assert not np.allclose(as_numpy(before(x)), as_numpy(after(x)), atol=1e-4)


def test_bad_backbone_arguments_raise_value_error_naming_them():
    # One test (not parametrized): every test pays a session clear on teardown.
    for kwargs, argument in [
        ({"image_size": 17}, "image_size"),
        ({"image_size": 12, "window_size": 3}, "image_size"),  # grid 6 -> 3: odd before the 2nd merging
        ({"image_size": 24}, "window_size"),  # grid 12 -> 6: window 4 does not divide 6
        ({"window_size": 3}, "window_size"),
        ({"tokenizer": "conv"}, "tokenizer"),
        ({"downsampling": "conv"}, "downsampling"),
        ({"attention": "linear"}, "attention"),
        ({"num_heads": (1, 3, 2)}, "num_heads"),
        ({"depths": (2, 0, 1)}, "depths"),
        ({"suppression": {"threshold": 1.5}}, "threshold"),
        ({"context_broadcasting": {"ratio": -0.5}}, "ratio"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ]:
        with pytest.raises(ValueError, match=f"`{argument}"):
            SwinBackbone(**with_techniques({**THREE_STAGES, **kwargs}))
