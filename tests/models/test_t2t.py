
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.models import ImageClassifier
from keras_smallvit.models import T2TBackbone
from keras_smallvit.models.registry import get_model_entry
from keras_smallvit.models.t2t import ClassTokenAndSinusoidalPositionEmbedding
from keras_smallvit.models.t2t import PatchShifting
from keras_smallvit.models.t2t import SoftSplit
from keras_smallvit.models.t2t import T2TAttention
from keras_smallvit.models.t2t import T2TBlock
from keras_smallvit.models.t2t import TokenTransformer
from tests import references as ref
from tests.contract import ARCHITECTURE_ONLY
from tests.contract import BACKEND
from tests.contract import LayerContract
from tests.contract import ModelContract
from tests.contract import as_numpy
from tests.contract import with_techniques

TOKENS, DIM = 10, 12
TINY = dict(
    image_size=16,
    hidden_dim=16,
    depth=2,
    num_heads=2,
    head_dim=8,
    token_dim=8,
    soft_splits=((3, 2, 1), (3, 2, 1)),
)
ALL_TECHNIQUES = dict(
    tokenizer="spt",
    attention="lsa",
    suppression={"threshold": 0.1, "initial_scale": 0.5},
    context_broadcasting={"ratio": 0.5},
)
SATA = {"threshold": 0.1, "initial_scale": 0.5}


def w(v):
    return as_numpy(v).astype(np.float64)


def tokens(shape=(2, TOKENS, DIM), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def randomize(layer, seed=0):
    """Random values in every trainable weight, so references cannot pass on
    initial values."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_weights:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))


# --- NumPy references, written from the definitions ------------------------


def unfold_reference(images, kernel, stride, padding):
    """torch.nn.Unfold on NHWC images, with loops: token (row-major window
    position), feature `c * k * k + i * k + j`."""
    b, h, w_, c = images.shape
    padded = np.zeros((b, h + 2 * padding, w_ + 2 * padding, c), images.dtype)
    padded[:, padding : padding + h, padding : padding + w_] = images
    out_h = (h + 2 * padding - kernel) // stride + 1
    out_w = (w_ + 2 * padding - kernel) // stride + 1
    out = np.zeros((b, out_h * out_w, c * kernel * kernel), images.dtype)
    for oi in range(out_h):
        for oj in range(out_w):
            for ch in range(c):
                for i in range(kernel):
                    for j in range(kernel):
                        out[:, oi * out_w + oj, ch * kernel * kernel + i * kernel + j] = padded[
                            :, oi * stride + i, oj * stride + j, ch
                        ]
    return out


def sinusoid_reference(num_positions, dim):
    table = np.zeros((num_positions, dim))
    for pos in range(num_positions):
        for j in range(dim):
            angle = pos / 10000 ** (2 * (j // 2) / dim)
            table[pos, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return table


def attention_with_value(attn, x, scale, sata=None):
    """Multi-head attention returning (projected output, merged values, probabilities)."""
    b, n, _ = x.shape
    heads, d = attn.num_heads, attn.head_dim
    inner = heads * d
    qkv = x @ w(attn.qkv.kernel)
    q, k, v = [qkv[..., i * inner : (i + 1) * inner].reshape(b, n, heads, d).transpose(0, 2, 1, 3) for i in range(3)]
    scores = np.einsum("bhid,bhjd->bhij", q, k) * np.asarray(scale)[None, :, None, None]
    if attn.diagonal_mask:
        scores = np.where(np.eye(n, dtype=bool), -np.inf, scores)
    probs = ref.softmax(scores)
    if sata is not None:
        probs = ref.twist(probs, sata["threshold"], sata["scale"])
    out = np.einsum("bhij,bhjd->bhid", probs, v).transpose(0, 2, 1, 3).reshape(b, n, inner)
    out = out @ w(attn.output_projection.kernel) + w(attn.output_projection.bias)
    return out, v.transpose(0, 2, 1, 3).reshape(b, n, inner), probs


def mlp_reference(layer, x):
    h = ref.layer_norm(x, w(layer.mlp_norm.gamma), w(layer.mlp_norm.beta))
    h = ref.gelu(h @ w(layer.mlp_dense_1.kernel) + w(layer.mlp_dense_1.bias))
    return h @ w(layer.mlp_dense_2.kernel) + w(layer.mlp_dense_2.bias)


def token_transformer_reference(layer, x, sata=None):
    """y = v + Proj(A v) of LN(x), scale (input size / heads) ** -0.5 unless LSA's
    temperature; then y + MLP(LN(y))."""
    x = x.astype(np.float64)
    attn = layer.attention_layer
    if attn.learnable_temperature:
        scale = w(attn.temperature)
    else:
        scale = np.full(attn.num_heads, (x.shape[-1] // attn.num_heads) ** -0.5)
    h = ref.layer_norm(x, w(layer.attention_norm.gamma), w(layer.attention_norm.beta))
    out, value, probs = attention_with_value(attn, h, scale, sata)
    y = value + out
    return y + mlp_reference(layer, y), probs


def t2t_block_reference(block, x, input_residual, cb_ratio=None):
    """x + (LN(x) if input_residual) + Attn(LN(x)); then x + CB(MLP(LN(x)))."""
    attn = block.attention_layer
    scale = w(attn.temperature) if attn.learnable_temperature else np.full(attn.num_heads, attn.head_dim**-0.5)
    h = ref.layer_norm(x, w(block.attention_norm.gamma), w(block.attention_norm.beta))
    out, _, probs = attention_with_value(attn, h, scale)
    x = x + out + (h if input_residual else 0.0)
    h = mlp_reference(block, x)
    if cb_ratio is not None:
        h = ref.context_broadcast(h, cb_ratio)
    return x + h, probs


# --- Layer contracts ---------------------------------------------------------


class TestSoftSplitContract(LayerContract):
    input_shape = (2, 8, 8, 3)
    has_trainable_weights = False

    def layer_factory(self, dtype):
        return SoftSplit(3, 2, 1, dtype=dtype)


class TestPatchShiftingContract(LayerContract):
    input_shape = (2, 8, 8, 3)
    has_trainable_weights = False

    def layer_factory(self, dtype):
        return PatchShifting(1, dtype=dtype)


class TestT2TAttentionContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return T2TAttention(1, 8, residual="value", diagonal_mask=True, learnable_temperature=True, dtype=dtype)


class TestTokenTransformerContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return TokenTransformer(8, techniques={"attention": "lsa", "suppression": True}, dtype=dtype)


class TestT2TBlockContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return T2TBlock(
            2, 4, techniques={"attention": "lsa", "suppression": True, "context_broadcasting": True},
            drop_path_rate=0.1, dtype=dtype,
        )


class TestSinusoidalEmbeddingContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return ClassTokenAndSinusoidalPositionEmbedding(dtype=dtype)


# --- Layers against the references ------------------------------------------


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [
        ((2, 8, 8, 3), 3, 2, 1),  # the official soft split
        ((1, 7, 9, 2), 3, 2, 1),  # odd and non-square sizes
        ((1, 16, 16, 2), 7, 4, 2),  # T2T-ViT's first ImageNet soft split
        ((1, 6, 6, 1), 2, 2, 0),  # non-overlapping: plain patches
    ],
)
def test_soft_split_matches_numpy_unfold(shape, kernel, stride, padding):
    images = np.random.default_rng(0).normal(size=shape).astype("float32")
    out = as_numpy(SoftSplit(kernel, stride, padding)(images))
    np.testing.assert_array_equal(out, unfold_reference(images, kernel, stride, padding))


@pytest.mark.skipif(BACKEND != "torch", reason="compares with torch.nn.functional.unfold, loaded on torch only")
def test_soft_split_matches_torch_unfold():
    import torch

    images = np.random.default_rng(1).normal(size=(2, 9, 8, 3)).astype("float32")
    want = torch.nn.functional.unfold(torch.tensor(images).permute(0, 3, 1, 2), 3, padding=1, stride=2)
    out = as_numpy(SoftSplit(3, 2, 1)(images))
    np.testing.assert_array_equal(out, want.transpose(1, 2).numpy())


def test_patch_shifting_is_spt_shifting():
    images = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype("float32")
    out = as_numpy(PatchShifting(1)(images))
    copies = [images] + [ref.shift_copy(images, dy, dx) for dy, dx in ref.DIRECTIONS["diagonal"]]
    np.testing.assert_array_equal(out, np.concatenate(copies, axis=-1))


@pytest.mark.parametrize("lsa,sata", [(False, False), (True, True)])
def test_token_transformer_matches_numpy_reference(lsa, sata):
    x = tokens()
    layer = TokenTransformer(8, techniques={"attention": "lsa" if lsa else "standard", "suppression": SATA if sata else None})
    layer.build(x.shape)
    attn = layer.attention_layer
    # Official scale: from the input size (12), not the head size (8).
    np.testing.assert_allclose(attn.default_scale, DIM**-0.5)
    if lsa:
        np.testing.assert_allclose(as_numpy(attn.temperature), [DIM**-0.5], rtol=1e-6)
    randomize(layer)
    out, probs = layer(x, return_attention_scores=True)
    assert out.shape == (2, TOKENS, 8) and probs.shape == (2, 1, TOKENS, TOKENS)
    # SATA's scale s was randomised with the other weights: read it back.
    sata_ref = {"threshold": 0.1, "scale": float(as_numpy(attn.suppression_layer.scale))} if sata else None
    want, want_probs = token_transformer_reference(layer, x, sata_ref)
    np.testing.assert_allclose(as_numpy(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want, atol=1e-4, rtol=1e-4)
    if lsa:
        np.testing.assert_array_equal(np.diagonal(as_numpy(probs), axis1=-2, axis2=-1), 0.0)


@pytest.mark.parametrize("input_residual", [True, False])
def test_t2t_block_matches_numpy_reference(input_residual):
    x = tokens()
    block = T2TBlock(
        2, 4, attention_input_residual=input_residual, techniques={"attention": "lsa", "context_broadcasting": {"ratio": 0.5}}
    )
    block.build(x.shape)
    randomize(block)
    out, probs = block(x, return_attention_scores=True)
    want, want_probs = t2t_block_reference(block, x.astype(np.float64), input_residual, cb_ratio=0.5)
    np.testing.assert_allclose(as_numpy(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want, atol=1e-4, rtol=1e-4)


def test_sinusoidal_embedding_is_fixed_and_matches_the_formula():
    x = tokens()
    layer = ClassTokenAndSinusoidalPositionEmbedding()
    out = as_numpy(layer(x))
    table = sinusoid_reference(TOKENS + 1, DIM)
    assert [v.name for v in layer.non_trainable_weights] == ["position_embedding"]
    assert [v.name for v in layer.trainable_weights] == ["class_token"]
    np.testing.assert_allclose(out[:, 1:], x + table[1:], atol=1e-6)
    np.testing.assert_allclose(out[:, 0], np.broadcast_to(w(layer.class_token)[0, 0] + table[0], (2, DIM)), atol=1e-6)


def test_t2t_attention_rejects_a_mismatched_output_dim():
    with pytest.raises(ValueError, match="`output_dim"):
        T2TAttention(2, 4, residual="value", output_dim=5)
    with pytest.raises(ValueError, match="`residual"):
        T2TAttention(2, 4, residual="query")


# --- Backbone and classifier -------------------------------------------------


def tiny_classifier(num_classes=5, dtype=None, **kwargs):
    backbone = T2TBackbone(**with_techniques({**TINY, **ALL_TECHNIQUES, **kwargs}), dtype=dtype)
    return ImageClassifier(backbone, num_classes)


def data(n=8, num_classes=5):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 16, 16, 3)).astype("float32"), rng.integers(0, num_classes, size=(n,))


# The official T2T module creates a LayerNorm(token_dim * 3 * 3) that its
# forward pass never calls: its parameters are in the official count only.
UNUSED_OFFICIAL_NORM = 2 * 64 * 3 * 3


# Parameter counts of the authors' official PyTorch code for the same config.
@pytest.mark.large
@ARCHITECTURE_ONLY
@pytest.mark.parametrize(
    "name,image_size,num_classes,official",
    [
        ("t2t", 32, 100, 6_525_850),
        ("sl_t2t", 32, 100, 6_546_851),
        ("t2t", 64, 200, 6_675_902),
        ("sl_t2t", 64, 200, 6_696_904),
    ],
)
def test_parameter_counts_equal_official_code(name, image_size, num_classes, official):
    model = keras_smallvit.create_model(name, num_classes=num_classes, image_size=image_size)
    assert model.count_params() + UNUSED_OFFICIAL_NORM == official
    assert len(model.backbone.soft_splits) == {32: 2, 64: 3}[image_size]
    assert model.backbone.grid_size == (8, 8)
    with_norm = keras_smallvit.create_model(
        name, num_classes=num_classes, image_size=image_size, projection_norm=True
    )
    assert with_norm.count_params() == official


def test_registry_variants():
    for name, tokenizer, attention, sata in [
        ("t2t", "soft_split", "standard", False),
        ("sl_t2t", "spt", "lsa", False),
        ("sata_t2t", "soft_split", "standard", True),
    ]:
        assert get_model_entry(name).paper_lr == 1e-3
        backbone = keras_smallvit.create_model(name, num_classes=3, image_size=32, depth=1).backbone
        assert isinstance(backbone, T2TBackbone) and backbone.soft_splits == ((3, 2, 1), (3, 2, 1))
        assert (backbone.techniques.tokenizer, backbone.techniques.attention) == (tokenizer, attention)
        assert backbone.techniques.suppression == (SATA if sata else None)
    model = keras_smallvit.create_model("t2t", num_classes=3, image_size=16, techniques=("cb",), depth=1)
    assert model.backbone.techniques.context_broadcasting == {"ratio": 0.5} and model.backbone.grid_size == (8, 8)
    with pytest.raises(ValueError, match="`image_size"):
        keras_smallvit.create_model("t2t", num_classes=3, image_size=48)


def test_drop_path_grows_linearly_over_the_blocks():
    backbone = T2TBackbone(**{**TINY, "depth": 3}, drop_path_rate=0.2)
    rates = [backbone.get_layer(f"block_{i}").drop_path_rate for i in range(3)]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2])


def test_backbone_config_round_trip():
    backbone = T2TBackbone(**with_techniques({**TINY, **ALL_TECHNIQUES}), drop_path_rate=0.1, projection_norm=True, seed=4)
    config = backbone.get_config()
    restored = T2TBackbone.from_config(config)
    assert restored.get_config() == config
    assert restored.count_params() == backbone.count_params()


class TestClassifier(ModelContract):
    fit_epochs, batch_size = 4, 8
    mixed_kwargs = {"depth": 1}  # keeps XLA compiles short
    half_layers = ("block_0",)

    def model_factory(self, dtype=None, **kwargs):
        return tiny_classifier(dtype=dtype, **kwargs)


def test_attention_maps_and_class_token_attention():
    model = tiny_classifier()
    x, _ = data(2)
    outputs = model.attention_model()(x)
    np.testing.assert_allclose(as_numpy(outputs["logits"]), as_numpy(model(x)), atol=1e-6)
    maps = [as_numpy(m) for m in outputs["attention_maps"]]
    # One token transformer (8x8 tokens after the first split), then the blocks.
    assert [m.shape for m in maps] == [(2, 1, 64, 64)] + [(2, 2, 17, 17)] * TINY["depth"]
    for m in maps:  # LSA everywhere, token transformers included
        np.testing.assert_array_equal(np.diagonal(m, axis1=-2, axis2=-1), 0.0)
    class_maps = [as_numpy(m) for m in outputs["class_token_attention"]]
    assert len(class_maps) == TINY["depth"]
    for m, c in zip(maps[1:], class_maps):
        np.testing.assert_array_equal(c, m[:, :, 0, 1:].reshape(2, 2, 4, 4))


def test_classifier_matches_numpy_reference():
    # SPT shifting, soft split, token transformer, soft split, projection,
    # class token + sinusoid table, official blocks (input residual), head.
    model = tiny_classifier(suppression=None)
    backbone = model.backbone
    randomize(backbone, seed=5)
    x, _ = data(2)
    x64 = x.astype(np.float64)
    h = np.concatenate([x64] + [ref.shift_copy(x64, dy, dx) for dy, dx in ref.DIRECTIONS["diagonal"]], axis=-1)
    h = unfold_reference(h, 3, 2, 1)
    h, _ = token_transformer_reference(backbone.get_layer("token_transformer_0"), h)
    h = unfold_reference(h.reshape(2, 8, 8, TINY["token_dim"]), 3, 2, 1)
    projection = backbone.get_layer("projection")
    h = h @ w(projection.kernel) + w(projection.bias)
    cls = np.broadcast_to(w(backbone.get_layer("embedding").class_token), (2, 1, TINY["hidden_dim"]))
    h = np.concatenate([cls, h], axis=1) + sinusoid_reference(17, TINY["hidden_dim"])
    for i in range(TINY["depth"]):
        h, _ = t2t_block_reference(backbone.get_layer(f"block_{i}"), h, input_residual=True, cb_ratio=0.5)
    head = ref.layer_norm(h[:, 0], w(model.head_norm.gamma), w(model.head_norm.beta))
    want = head @ w(model.classifier.kernel) + w(model.classifier.bias)
    np.testing.assert_allclose(as_numpy(model(x)), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"soft_splits": ((3, 2),)}, "soft_splits"),
        ({"soft_splits": ((9, 1, 0), (9, 1, 0))}, "soft_splits"),
        ({"tokenizer": "patch"}, "tokenizer"),
        ({"attention": "performer"}, "attention"),
        ({"shift_ratio": 0.25, "tokenizer": "spt"}, "shift_ratio"),
        ({"suppression": {"threshold": 1.5}}, "threshold"),
        ({"context_broadcasting": {"ratio": -0.5}}, "ratio"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_bad_backbone_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}"):
        T2TBackbone(**with_techniques({**TINY, **kwargs}))
