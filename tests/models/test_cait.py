
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.models import CaiTBackbone
from keras_smallvit.models import ImageClassifier
from keras_smallvit.models.cait import CaiTBlock
from keras_smallvit.models.cait import ClassToken
from keras_smallvit.models.cait import LayerScale
from keras_smallvit.models.cait import LearnedPositionEmbedding
from keras_smallvit.models.cait import TalkingHeadsAttention
from keras_smallvit.models.registry import get_model_entry
from tests import references as ref
from tests.contract import ARCHITECTURE_ONLY
from tests.contract import LayerContract
from tests.contract import ModelContract
from tests.contract import as_numpy
from tests.contract import with_techniques
from tests.contract import inference

HEADS, HEAD_DIM, TOKENS, DIM = 3, 4, 10, 12
TINY = dict(image_size=16, patch_size=4, hidden_dim=16, depth=2, class_depth=1, num_heads=2, head_dim=8)
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


# --- NumPy references, written from the CaiT / talking-heads formulas -------


def talking_heads_reference(layer, x, context=None, sata=None):
    """Returns (output, weights): per-head scores, pre-softmax mixing, diagonal
    mask (-inf), softmax, TWIST, post-softmax mixing, `A @ V`, projection."""
    x = x.astype(np.float64)
    context = x if context is None else context.astype(np.float64)
    heads, d = layer.num_heads, layer.head_dim
    inner = heads * d
    kernel = w(layer.qkv.kernel)

    def split(t, part):  # (B, N, inner) -> (B, heads, N, d)
        t = t @ kernel[:, part * inner : (part + 1) * inner]
        return t.reshape(t.shape[0], t.shape[1], heads, d).transpose(0, 2, 1, 3)

    q, k, v = split(x, 0), split(context, 1), split(context, 2)
    scale = w(layer.temperature) if layer.learnable_temperature else np.full(heads, d**-0.5)
    scores = np.einsum("bhid,bhjd->bhij", q, k) * scale[None, :, None, None]
    pre, post = w(layer.pre_softmax_mixing), w(layer.post_softmax_mixing)
    mixed = np.zeros_like(scores)
    for g in range(heads):  # S'_g = sum_h S_h W_pre[h, g]
        for h in range(heads):
            mixed[:, g] += scores[:, h] * pre[h, g]
    if layer.diagonal_mask:
        mixed = np.where(np.eye(mixed.shape[-1], dtype=bool), -np.inf, mixed)
    probs = ref.softmax(mixed)
    if sata is not None:
        probs = ref.twist(probs, sata["threshold"], sata["scale"])
    weights = np.zeros_like(probs)
    for g in range(heads):  # A_g = sum_h P_h W_post[h, g]
        for h in range(heads):
            weights[:, g] += probs[:, h] * post[h, g]
    out = np.einsum("bhij,bhjd->bhid", weights, v).transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], inner)
    return out @ w(layer.output_projection.kernel) + w(layer.output_projection.bias), weights


def cait_block_reference(block, x, context=None, cb_ratio=None, sata=None):
    """x + LS1 * Attn(LN(x)[, context]); then x + LS2 * CB(MLP(LN(x)))."""
    x = x.astype(np.float64)
    h = ref.layer_norm(x, w(block.attention_norm.gamma), w(block.attention_norm.beta))
    h, weights = talking_heads_reference(block.attention_layer, h, context, sata=sata)
    x = x + h * w(block.attention_scale.gamma)
    h = ref.layer_norm(x, w(block.mlp_norm.gamma), w(block.mlp_norm.beta))
    h = ref.gelu(h @ w(block.mlp_dense_1.kernel) + w(block.mlp_dense_1.bias))
    h = h @ w(block.mlp_dense_2.kernel) + w(block.mlp_dense_2.bias)
    if cb_ratio is not None:
        h = ref.context_broadcast(h, cb_ratio)
    return x + h * w(block.mlp_scale.gamma), weights


def randomize(layer, seed=0):
    """Random values in every weight (LayerScale and LayerNorm included), so
    references cannot pass on initial values."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        if v.trainable:
            v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))


# --- Layer contracts ---------------------------------------------------------


class TestLayerScaleContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return LayerScale(1e-5, dtype=dtype)


class TestLearnedPositionEmbeddingContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return LearnedPositionEmbedding(dtype=dtype)


class TestClassTokenContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return ClassToken(dtype=dtype)


class TestTalkingHeadsAttentionContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return TalkingHeadsAttention(
            HEADS, HEAD_DIM, diagonal_mask=True, learnable_temperature=True, suppression=True, dtype=dtype
        )


class TestCaiTBlockContract(LayerContract):
    input_shape = (2, TOKENS, DIM)

    def layer_factory(self, dtype):
        return CaiTBlock(
            HEADS,
            HEAD_DIM,
            techniques={"attention": "lsa", "suppression": True, "context_broadcasting": True},
            drop_path_rate=0.1,
            seed=3,
            dtype=dtype,
        )


# --- Layers against the references ------------------------------------------


def test_layer_scale_multiplies_each_channel():
    x = tokens()
    layer = LayerScale(0.1)
    layer.build(x.shape)
    np.testing.assert_allclose(as_numpy(layer.gamma), np.full(DIM, 0.1), rtol=1e-7)
    gamma = np.arange(1, DIM + 1, dtype="float32")
    layer.gamma.assign(gamma)
    np.testing.assert_allclose(as_numpy(layer(x)), x * gamma[None, None, :], rtol=1e-6)


@pytest.mark.parametrize("lsa,sata", [(False, False), (True, False), (True, True)])
def test_talking_heads_self_attention_matches_numpy_reference(lsa, sata):
    x = tokens()
    layer = TalkingHeadsAttention(
        HEADS, HEAD_DIM, diagonal_mask=lsa, learnable_temperature=lsa, suppression=SATA if sata else None
    )
    layer.build(x.shape)
    if lsa:
        layer.temperature.assign(np.array([0.1, 0.5, 1.3], "float32"))
    out, weights = layer(x, return_attention_scores=True)
    want_out, want_weights = talking_heads_reference(
        layer, x, sata={"threshold": 0.1, "scale": 0.5} if sata else None
    )
    np.testing.assert_allclose(as_numpy(weights), want_weights, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want_out, atol=1e-4)


def test_talking_heads_lsa_diagonal_is_exactly_zero_whatever_the_mixing():
    # Masking before the pre-softmax mixing would not survive it (a column of
    # W_pre with a negative sum turns the mask into a large positive score).
    x = tokens()
    layer = TalkingHeadsAttention(HEADS, HEAD_DIM, diagonal_mask=True, learnable_temperature=True)
    layer.build(x.shape)
    mixing = np.array([[-1.0, 2.0, 0.5], [-1.5, -0.3, 1.0], [0.2, -2.0, -1.0]], "float32")
    layer.pre_softmax_mixing.assign(mixing)
    layer.post_softmax_mixing.assign(mixing.T)
    _, weights = layer(x, return_attention_scores=True)
    weights = as_numpy(weights)
    np.testing.assert_array_equal(np.diagonal(weights, axis1=-2, axis2=-1), 0.0)
    assert (mixing.sum(axis=0) < 0).any()  # the case that defeats masking before mixing


def test_class_attention_queries_the_context_only():
    cls, patches = tokens((2, 1, DIM), seed=1), tokens((2, TOKENS, DIM), seed=2)
    layer = TalkingHeadsAttention(HEADS, HEAD_DIM, learnable_temperature=True, suppression=SATA)
    layer.build(cls.shape)
    layer.temperature.assign(np.array([0.3, 0.2, 0.9], "float32"))
    out, weights = layer(cls, context=patches, return_attention_scores=True)
    assert weights.shape == (2, HEADS, 1, TOKENS)
    want_out, want_weights = talking_heads_reference(layer, cls, patches, sata={"threshold": 0.1, "scale": 0.5})
    np.testing.assert_allclose(as_numpy(weights), want_weights, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want_out, atol=1e-4)
    with pytest.raises(ValueError, match="diagonal_mask"):
        TalkingHeadsAttention(HEADS, HEAD_DIM, diagonal_mask=True)(cls, context=patches)


@pytest.mark.parametrize("class_attention", [False, True])
def test_cait_block_matches_numpy_reference(class_attention):
    x = tokens((2, 1, DIM) if class_attention else (2, TOKENS, DIM), seed=3)
    context = tokens((2, TOKENS, DIM), seed=4) if class_attention else None
    block = CaiTBlock(
        HEADS,
        HEAD_DIM,
        class_attention=class_attention,
        techniques={"attention": "lsa", "context_broadcasting": None if class_attention else {"ratio": 0.5}},
        layer_scale_init=1e-5,
    )
    block.build(x.shape)
    np.testing.assert_allclose(as_numpy(block.attention_scale.gamma), np.full(DIM, 1e-5), rtol=1e-6)
    assert block.attention_layer.diagonal_mask is (not class_attention)
    randomize(block)
    out, weights = block(x, context=context, return_attention_scores=True)
    want, want_weights = cait_block_reference(block, x, context, cb_ratio=None if class_attention else 0.5)
    np.testing.assert_allclose(as_numpy(weights), want_weights, atol=1e-5)
    np.testing.assert_allclose(as_numpy(out), want, atol=1e-4, rtol=1e-4)


def test_cait_block_checks_its_context():
    with pytest.raises(ValueError, match="context"):
        CaiTBlock(HEADS, HEAD_DIM, class_attention=True)(tokens((2, 1, DIM)))
    with pytest.raises(ValueError, match="context"):
        CaiTBlock(HEADS, HEAD_DIM)(tokens(), context=tokens())


# --- Backbone and classifier -------------------------------------------------


def tiny_classifier(num_classes=5, dtype=None, **kwargs):
    backbone = CaiTBackbone(**with_techniques({**TINY, **ALL_TECHNIQUES, **kwargs}), dtype=dtype)
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
        ("cait", 32, 100, 9_037_988),
        ("sl_cait", 32, 100, 9_075_436),
        ("cait", 64, 200, 9_084_936),
        ("sl_cait", 64, 200, 9_234_416),
    ],
)
def test_parameter_counts_equal_official_code(name, image_size, num_classes, official):
    model = keras_smallvit.create_model(name, num_classes=num_classes, image_size=image_size)
    assert model.count_params() == official
    backbone = model.backbone
    assert (backbone.depth, backbone.class_depth, backbone.grid_size) == (24, 2, (8, 8))
    # Official LayerScale init: by layer number within each stack.
    gammas = [as_numpy(backbone.get_layer(f"patch_block_{i}").attention_scale.gamma)[0] for i in (17, 18, 23)]
    np.testing.assert_allclose(gammas, [0.1, 1e-5, 1e-5], rtol=1e-6)
    np.testing.assert_allclose(as_numpy(backbone.get_layer("class_block_1").mlp_scale.gamma)[0], 0.1, rtol=1e-6)


def test_registry_variants():
    for name, tokenizer, attention, sata in [
        ("cait", "patch", "standard", False),
        ("sl_cait", "spt", "lsa", False),
        ("sata_cait", "patch", "standard", True),
    ]:
        assert get_model_entry(name).paper_lr == 1e-3
        backbone = keras_smallvit.create_model(
            name, num_classes=3, image_size=64, depth=1, class_depth=1, techniques=None
        ).backbone
        assert isinstance(backbone, CaiTBackbone) and backbone.patch_size == (8, 8)
        assert (backbone.techniques.tokenizer, backbone.techniques.attention) == (tokenizer, attention)
        assert backbone.techniques.suppression == (SATA if sata else None)
    model = keras_smallvit.create_model(
        "cait", num_classes=3, image_size=32, techniques=("cb", "lsa"), depth=1, class_depth=1, head_dropout=0.1
    )
    techniques = model.backbone.techniques
    assert techniques.context_broadcasting == {"ratio": 0.5} and techniques.attention == "lsa"
    assert model.head_dropout == 0.1


def test_backbone_config_round_trip():
    backbone = CaiTBackbone(**with_techniques({**TINY, **ALL_TECHNIQUES}), drop_path_rate=0.1, layer_scale_init=0.2, seed=4)
    config = backbone.get_config()
    restored = CaiTBackbone.from_config(config)
    assert restored.get_config() == config
    assert restored.count_params() == backbone.count_params()


class TestClassifier(ModelContract):
    fit_epochs, batch_size = 4, 8
    mixed_kwargs = {"depth": 1}  # one layer of each kind keeps XLA compiles short
    half_layers = ("patch_block_0",)

    def model_factory(self, dtype=None, **kwargs):
        return tiny_classifier(dtype=dtype, **kwargs)

    def check_mixed_model(self, model):
        outputs = inference(model.attention_model(), self.data(2)[0])
        assert outputs["logits"].dtype == np.float32 and np.isfinite(outputs["logits"]).all()
        for m in outputs["attention_maps"][:1]:  # LSA holds in float16 too
            np.testing.assert_array_equal(np.diagonal(m, axis1=-2, axis2=-1), 0.0)


def test_attention_maps_and_class_token_attention():
    model = tiny_classifier()
    x, _ = data(2)
    outputs = model.attention_model()(x)
    np.testing.assert_allclose(as_numpy(outputs["logits"]), as_numpy(model(x)), atol=1e-6)
    maps = [as_numpy(m) for m in outputs["attention_maps"]]
    assert len(maps) == TINY["depth"] + TINY["class_depth"]
    for m in maps[: TINY["depth"]]:
        assert m.shape == (2, 2, 16, 16)
        np.testing.assert_array_equal(np.diagonal(m, axis1=-2, axis2=-1), 0.0)  # LSA in patch attention
    class_maps = [as_numpy(m) for m in outputs["class_token_attention"]]
    assert len(class_maps) == TINY["class_depth"]
    np.testing.assert_array_equal(class_maps[0], maps[-1].reshape(2, 2, 4, 4))


def test_classifier_matches_numpy_reference():
    # Patch embedding, position embedding (patches only), patch blocks, class
    # token through the class-attention block over the raw patch tokens, head.
    model = tiny_classifier(tokenizer="patch", suppression=None, layer_scale_init=0.5)
    backbone = model.backbone
    for layer in backbone.layers:
        if isinstance(layer, CaiTBlock):
            randomize(layer, seed=len(layer.name))
    x, _ = data(2)
    tok = backbone.get_layer("tokenizer")
    h = ref.patches(x.astype(np.float64), 4) @ w(tok.projection.kernel) + w(tok.projection.bias)
    h = h + w(backbone.get_layer("position_embedding").position_embedding)
    for i in range(TINY["depth"]):
        h, _ = cait_block_reference(backbone.get_layer(f"patch_block_{i}"), h, cb_ratio=0.5)
    cls = np.broadcast_to(w(backbone.get_layer("class_token").class_token), (2, 1, TINY["hidden_dim"]))
    cls, _ = cait_block_reference(backbone.get_layer("class_block_0"), cls, context=h)
    head = ref.layer_norm(cls[:, 0], w(model.head_norm.gamma), w(model.head_norm.beta))
    want = head @ w(model.classifier.kernel) + w(model.classifier.bias)
    np.testing.assert_allclose(as_numpy(model(x)), want, atol=1e-4, rtol=1e-4)
    sequence = as_numpy(backbone(x)["sequence_output"])
    np.testing.assert_allclose(sequence[:, 1:], h, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"image_size": 30}, "image_size"),
        ({"tokenizer": "soft_split"}, "tokenizer"),
        ({"attention": "linear"}, "attention"),
        ({"class_depth": 0}, "class_depth"),
        ({"layer_scale_init": -1.0}, "layer_scale_init"),
        ({"suppression": {"threshold": 1.5}}, "threshold"),
        ({"context_broadcasting": {"ratio": -0.5}}, "ratio"),
        ({"context_broadcasting_position": "everywhere"}, "context_broadcasting_position"),
    ],
)
def test_bad_backbone_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}"):
        CaiTBackbone(**with_techniques({**TINY, **kwargs}))
