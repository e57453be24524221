"""The ImageNet presets (issue 28): DeiT-Ti/S/B (and distilled), PiT-Ti/XS/S/B,
Swin-T/S/B at 224 px against the published parameter counts; DeiT's
distillation token and heads against their definition (NumPy), in a
classifier and in the logit distiller."""

import keras
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit import aal
from keras_smallvit.models import ImageClassifier
from keras_smallvit.models import PiTBackbone
from keras_smallvit.models import SwinBackbone
from keras_smallvit.models import ViTBackbone
from tests import references as ref
from tests.aal.test_distiller import FIT_JIT
from tests.aal.test_distiller import tiny_teacher
from tests.aal.test_logit_distillation import log_softmax
from tests.aal.test_logit_distillation import mixed_labels
from tests.aal.test_logit_distillation import ref_ce
from tests.aal.test_logit_distillation import ref_term
from tests.aal.test_logit_distillation import ref_term_gradient
from tests.aal.test_logit_distillation import smoothed
from tests.aal.test_logit_distillation import softmax
from tests.contract import ARCHITECTURE_ONLY
from tests.contract import as_numpy

# 1000 classes at 224 px. DeiT and Swin: timm's exact counts (timm/models/deit.py,
# swin_transformer.py; the papers: DeiT-Ti 5M, S 22M, B 86M, distilled 6M /
# 22M / 87M; Swin-T 28M, S 50M, B 88M).
EXACT = {
    "deit_ti": 5_717_416,
    "deit_ti_distilled": 5_910_800,
    "deit_s": 22_050_664,
    "deit_s_distilled": 22_436_432,
    "deit_b": 86_567_656,
    "deit_b_distilled": 87_338_192,
    "swin_t": 28_288_354,
    "swin_s": 49_606_258,
    "swin_b": 87_768_224,
}
# PiT: the paper's Table (millions, one decimal; its 4.9M for PiT-Ti is
# 4.85M rounded up) and (patch, stride, base dim, depths, heads) of the
# official `pit.py`, counted by `official_pit_parameters`.
PIT_MILLIONS = {"pit_ti": 4.9, "pit_xs": 10.6, "pit_s": 23.5, "pit_b": 73.8}
PIT_OFFICIAL = {
    "pit_ti": (16, 8, 32, (2, 6, 4), (2, 4, 8)),
    "pit_xs": (16, 8, 48, (2, 6, 4), (2, 4, 8)),
    "pit_s": (16, 8, 48, (2, 6, 4), (3, 6, 12)),
    "pit_b": (14, 7, 64, (3, 6, 4), (4, 8, 16)),
}


def official_pit_parameters(patch, stride, base_dim, depths, heads, image=224, classes=1000):
    """The parameters of the official PiT (naver-ai/pit `pit.py`) from its
    modules: conv_embedding (Conv2d with bias), pos_embed (1, C, w, w) (no
    class-token entry), cls_token, per stage timm `Block`s (qkv bias, MLP
    ratio 4), conv_head_pooling (grouped Conv2d C -> 2C, kernel 3, and a
    Linear for the class token), the final LayerNorm and the head."""
    width = (image - patch) // stride + 1
    dims = [base_dim * h for h in heads]
    total = 3 * patch * patch * dims[0] + dims[0] + dims[0] * width * width + dims[0]
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        block = 2 * 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim)
        total += depth * block
        if stage < len(depths) - 1:
            total += (dims[stage + 1] * 9 + dims[stage + 1]) + (dim * dims[stage + 1] + dims[stage + 1])
    return total + 2 * dims[-1] + dims[-1] * classes + classes
CHEAP = ("deit_ti", "deit_ti_distilled")


def build(name):
    return keras_smallvit.create_model(name, num_classes=1000, image_size=224)


@ARCHITECTURE_ONLY
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n in CHEAP else pytest.mark.large) for n in EXACT]
)
def test_parameter_counts_equal_the_published_ones(name):
    assert build(name).count_params() == EXACT[name]


@ARCHITECTURE_ONLY
@pytest.mark.large
@pytest.mark.parametrize("name", list(PIT_MILLIONS))
def test_pit_parameter_counts_equal_the_papers(name):
    model = build(name)
    assert abs(model.count_params() / 1e6 - PIT_MILLIONS[name]) < 0.06  # PiT-Ti: 4.85M printed as 4.9M
    # The official code's modules, plus the class token's position in ours.
    official = official_pit_parameters(*PIT_OFFICIAL[name])
    assert model.count_params() == official + model.backbone.hidden_dim
    # The ImageNet PiT's pooling has no pointwise Dense; its patches overlap.
    backbone = model.backbone
    assert not any(w.path.endswith("pointwise/kernel") for w in backbone.weights)
    assert backbone.grid_size == ((27, 27) if name != "pit_b" else (31, 31))


# --- the distillation token and heads ------------------------------------------------------

TINY = dict(image_size=16, patch_size=4, hidden_dim=16, depth=2, num_heads=2, head_dim=8, use_qkv_bias=True)


def distilled(num_classes=3):
    return ImageClassifier(ViTBackbone(**TINY, distillation_token=True, seed=1), num_classes)


def head_reference(model, x):
    """DeiT's heads in NumPy from the backbone's tokens: the one LayerNorm,
    the class head on token 0, the distillation head on token 1."""
    tokens = as_numpy(model.backbone(x)["sequence_output"]).astype("float64")
    w = lambda v: as_numpy(v).astype("float64")  # noqa: E731
    norm = lambda t: ref.layer_norm(t, w(model.head_norm.gamma), w(model.head_norm.beta))  # noqa: E731
    cls = norm(tokens[:, 0]) @ w(model.classifier.kernel) + w(model.classifier.bias)
    dist = norm(tokens[:, 1]) @ w(model.distillation_classifier.kernel) + w(model.distillation_classifier.bias)
    return cls, dist


def test_distillation_token_heads_follow_deit():
    model = distilled()
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    backbone = model.backbone
    assert backbone.num_prefix_tokens == 2 and model.distillation_head
    assert tuple(backbone.output["sequence_output"].shape) == (None, 2 + 16, 16)
    # The token and its position: one more token than the class token alone.
    embedding = backbone.get_layer("embedding")
    assert tuple(embedding.position_embedding.shape) == (1, 18, 16)
    cls, dist = head_reference(model, x)
    # Inference: the mean of both heads (DeiT); training: each head apart.
    np.testing.assert_allclose(as_numpy(model(x)), (cls + dist) / 2, atol=1e-5)
    heads = model.distillation_heads_model()(x)
    np.testing.assert_allclose(as_numpy(heads["class_logits"]), cls, atol=1e-5)
    np.testing.assert_allclose(as_numpy(heads["distillation_logits"]), dist, atol=1e-5)
    # Class-token maps skip both prefix tokens; the heads come with them.
    outputs = model.attention_model()(x)
    assert tuple(outputs["class_token_attention"][0].shape) == (2, 2, 4, 4)
    np.testing.assert_allclose(
        as_numpy(outputs["class_token_attention"][0]),
        as_numpy(outputs["attention_maps"][0])[:, :, 0, 2:].reshape(2, 2, 4, 4),
    )
    np.testing.assert_allclose(as_numpy(outputs["distillation_logits"]), dist, atol=1e-5)
    # Config round trip (the head follows the backbone's token).
    config = model.get_config()
    assert ImageClassifier.from_config(config).get_config() == config


def test_distillation_head_needs_the_token():
    plain = ViTBackbone(**TINY)
    assert not ImageClassifier(plain, 3).distillation_head
    with pytest.raises(ValueError, match="`distillation_head`"):
        ImageClassifier(plain, 3, distillation_head=True)
    with pytest.raises(ValueError, match="`pooling`"):
        ImageClassifier(ViTBackbone(**TINY, distillation_token=True), 3, pooling="average")
    with pytest.raises(ValueError, match="no distillation head"):
        ImageClassifier(plain, 3).distillation_heads_model()
    with pytest.raises(ValueError, match="`distillation_token`"):
        ViTBackbone(**TINY, distillation_token="yes")


@pytest.mark.parametrize("mode, alpha", [("hard", 0.5), ("soft", 0.3)])
def test_distiller_trains_the_class_head_on_labels_and_the_distillation_head_on_the_teacher(mode, alpha):
    """One SGD step: CE on the class head, the teacher term on the
    distillation head (DeiT), each head's bias moving by its own term's
    NumPy gradient; the metrics read the heads' mean."""
    student, teacher = distilled(), tiny_teacher()
    x = np.random.default_rng(0).uniform(size=(6, 16, 16, 3)).astype("float32")
    y = mixed_labels(6)
    cls, dist = head_reference(student, x)
    t = as_numpy(teacher(x, training=False))
    biases = [as_numpy(student.classifier.bias).copy(), as_numpy(student.distillation_classifier.bias).copy()]
    distiller = aal.LogitDistiller(student, teacher, mode, alpha)
    lr = 0.5
    distiller.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1")],
        jit_compile=FIT_JIT,
    )
    history = distiller.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["ce_loss"][0], ref_ce(cls, y).mean(), rtol=1e-5)
    np.testing.assert_allclose(history["distillation_loss"][0], ref_term(dist, t, mode, 1.0).mean(), rtol=1e-5)
    total = ((1 - alpha) * ref_ce(cls, y) + alpha * ref_term(dist, t, mode, 1.0)).mean()
    np.testing.assert_allclose(history["loss"][0], total, rtol=1e-5)
    mean = (cls + dist) / 2
    np.testing.assert_allclose(history["top1"][0], np.mean(mean.argmax(-1) == y.argmax(-1)))
    class_gradient = (1 - alpha) * (softmax(cls) - smoothed(y)) / len(x)
    distillation_gradient = alpha * ref_term_gradient(dist, t, mode, 1.0) / len(x)
    np.testing.assert_allclose(as_numpy(student.classifier.bias), biases[0] - lr * class_gradient.sum(0), atol=1e-5)
    np.testing.assert_allclose(
        as_numpy(student.distillation_classifier.bias), biases[1] - lr * distillation_gradient.sum(0), atol=1e-5
    )
    assert np.isfinite(log_softmax(mean)).all()


# --- the options of the ImageNet PiT and Swin on tiny models -------------------------------


def test_pit_overlapping_patches_and_pooling_without_pointwise():
    tiny = dict(image_size=16, patch_size=4, hidden_dim=8, depths=(1, 1), num_heads=(1, 2), head_dim=8)
    backbone = PiTBackbone(**tiny, patch_stride=2, pooling_pointwise=False, use_qkv_bias=True)
    assert backbone.grid_size == (7, 7)  # (16 - 4) // 2 + 1
    assert not any("pointwise" in w.path for w in backbone.weights)
    config = backbone.get_config()
    assert PiTBackbone.from_config(config).get_config() == config
    # SPT takes non-overlapping patches: the stride is the plain tokenizer's.
    assert PiTBackbone(**tiny, patch_stride=2, techniques=("spt", "lsa")).grid_size == (4, 4)
    with pytest.raises(ValueError, match="`patch_stride`"):
        PiTBackbone(**tiny, patch_stride=8)


def test_swin_without_absolute_position_embedding():
    tiny = dict(image_size=16, patch_size=2, hidden_dim=8, depths=(2, 1), num_heads=(1, 2), window_size=4)
    with_ape, without = SwinBackbone(**tiny), SwinBackbone(**tiny, absolute_position_embedding=False)
    assert with_ape.count_params() - without.count_params() == 8 * 8 * 8  # (64 tokens, dim 8)
    assert without.get_config()["absolute_position_embedding"] is False


def test_deit_starts_its_embeddings_as_deit():
    """trunc_normal_(std=0.02) of DeiT's code (its bounds +-2 cut nothing at that std)."""
    backbone = keras_smallvit.create_model("deit_ti_distilled", num_classes=10, image_size=64).backbone
    embedding = backbone.get_layer("embedding")
    values = np.concatenate(
        [as_numpy(w).ravel() for w in (embedding.position_embedding, embedding.class_token, embedding.distillation_token_weight)]
    )
    assert abs(values.std() - 0.02) < 0.002 and abs(values.mean()) < 0.002
    assert backbone.get_config()["use_qkv_bias"] and backbone.get_config()["layer_norm_epsilon"] == 1e-6
