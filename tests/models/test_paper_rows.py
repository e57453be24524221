"""The papers' ablation rows as a model + technique spec (issue 31): LSA's
elements alone (SPT/LSA Table 4), the softmax temperature multiple (SATA
Table 6), a fixed SATA `s` (SATA Tables 3-5) in every backbone; SPT with
and without `S_pool` in PiT and Swin (SPT/LSA Table 2); the named variants.

Cheap: tiny symbolic builds (the attention values themselves are checked
against NumPy in tests/layers/test_attention.py)."""

import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.layers import MultiHeadSelfAttention
from keras_smallvit.layers import ShiftedPatchTokenization
from keras_smallvit.layers import TechniqueSpec
from keras_smallvit.models import CaiTBackbone
from keras_smallvit.models import ImageClassifier
from keras_smallvit.models import PiTBackbone
from keras_smallvit.models import SwinBackbone
from keras_smallvit.models import T2TBackbone
from keras_smallvit.models import ViTBackbone
from keras_smallvit.models import preset_table
from keras_smallvit.models.pit import DepthwiseConvPooling
from keras_smallvit.models.registry import model_facts
from keras_smallvit.models.swin import PatchMerging
from keras_smallvit.utils.layers import all_sublayers
from tests.contract import BACKEND
from tests.contract import as_numpy

pytestmark = pytest.mark.skipif(
    BACKEND != "torch", reason="configs and symbolic builds, the same on every backend (the attention values: "
    "tests/layers/test_attention.py, every backend): checked once, on the torch pass (the quickest to build)"
)

# The tiny configs of each backbone's own tests.
TINY = {
    ViTBackbone: dict(image_size=16, patch_size=4, hidden_dim=16, depth=2, num_heads=2, head_dim=8),
    PiTBackbone: dict(image_size=16, patch_size=2, hidden_dim=8, depths=(1, 1, 1), num_heads=(1, 2, 2), head_dim=4),
    SwinBackbone: dict(image_size=16, patch_size=2, hidden_dim=8, depths=(2, 1, 1), num_heads=(1, 2, 2), window_size=4),
    CaiTBackbone: dict(image_size=16, patch_size=4, hidden_dim=16, depth=2, class_depth=1, num_heads=2, head_dim=8),
    T2TBackbone: dict(
        image_size=16, hidden_dim=16, depth=2, num_heads=2, head_dim=8, token_dim=8, soft_splits=((3, 2, 1), (3, 2, 1))
    ),
}
# The registry's overrides for the same configs (the image size is `create_model`'s).
PIT_OVERRIDES = {k: v for k, v in TINY[PiTBackbone].items() if k != "image_size"}
SWIN_OVERRIDES = {k: v for k, v in TINY[SwinBackbone].items() if k != "image_size"}
VIT_OVERRIDES = {k: v for k, v in TINY[ViTBackbone].items() if k != "image_size"}
FIXED_S = {"threshold": 0.05, "initial_scale": 0.0, "trainable_scale": False}


def attention_layers(model):
    """Every attention layer of `model`, each with whether it is a class
    attention (a class token attending to patches: no diagonal)."""
    layers = all_sublayers(model)
    class_attention = {id(l.attention_layer) for l in layers if getattr(l, "class_attention", False)}
    found = [(l, id(l) in class_attention) for l in layers if isinstance(l, MultiHeadSelfAttention)]
    assert found
    return found


@pytest.mark.parametrize("backbone_class", list(TINY), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "fields,mask,learned",
    [
        (dict(attention="diagonal_mask", temperature_multiple=2.0), True, False),
        (dict(attention="learnable_temperature", temperature_multiple=3.0, suppression=FIXED_S), False, True),
    ],
    ids=["mask_only_x2", "temperature_only_x3_fixed_s"],
)
def test_every_backbone_takes_the_ablation_options_and_round_trips(backbone_class, fields, mask, learned):
    backbone = backbone_class(**TINY[backbone_class], techniques=TechniqueSpec(**fields))
    restored = backbone_class.from_config(backbone.get_config())
    assert restored.get_config() == backbone.get_config()
    # (The tokenizer None resolves to the backbone's plain one.)
    spec = TechniqueSpec(**fields).check_tokenizer(backbone.techniques.tokenizer)
    assert restored.techniques == backbone.techniques == spec
    multiple = fields["temperature_multiple"]
    for model in (backbone, restored):
        for layer, class_attention in attention_layers(model):
            assert layer.diagonal_mask == (mask and not class_attention), layer.name
            assert layer.learnable_temperature == learned and layer.temperature_multiple == multiple
            # T2T's token transformers scale by their input size: `attention_scale`.
            base = layer.head_dim**-0.5 if layer.attention_scale is None else layer.attention_scale
            assert layer.default_scale == pytest.approx(multiple * base)
            if learned:
                np.testing.assert_allclose(as_numpy(layer.temperature), multiple * base, rtol=1e-6)
            if "suppression" in fields:
                s = layer.suppression_layer.sata_scale
                assert not s.trainable and as_numpy(s) == 0.0 and layer.suppression_layer.threshold == 0.05
            else:
                assert layer.suppression is None


def count(model, layer_type):
    return sum(isinstance(layer, layer_type) for layer in model.backbone.layers)


@pytest.mark.parametrize(
    "family,standard_pooling,overrides",
    [("pit", DepthwiseConvPooling, PIT_OVERRIDES), ("swin", PatchMerging, SWIN_OVERRIDES)],
)
def test_spt_with_and_without_s_pool(family, standard_pooling, overrides):
    # SPT/LSA paper Table 2: "SL-PiT / SL-Swin w/o S_pool" (SPT at the input,
    # the standard pooling between stages) and "w/ S_pool" (SPT pooling too).
    stages = len(overrides["depths"])
    without = keras_smallvit.create_model(f"sl_{family}_no_spool", num_classes=3, image_size=16, **overrides)
    with_spool = keras_smallvit.create_model(f"sl_{family}", num_classes=3, image_size=16, **overrides)
    assert isinstance(without.backbone.get_layer("tokenizer"), ShiftedPatchTokenization)
    assert (count(without, ShiftedPatchTokenization), count(without, standard_pooling)) == (1, stages - 1)
    assert (count(with_spool, ShiftedPatchTokenization), count(with_spool, standard_pooling)) == (stages, 0)
    for model in (without, with_spool):
        assert model.backbone.techniques == TechniqueSpec.from_names(("spt", "lsa"))
        restored = ImageClassifier.from_config(model.get_config())
        assert restored.get_config() == model.get_config()
        assert count(restored, ShiftedPatchTokenization) == count(model, ShiftedPatchTokenization)
    # The same switch on any variant: the backbone's `downsampling`.
    plain = {"pit": "conv", "swin": "patch_merging"}[family]
    assert without.backbone.downsampling == plain and with_spool.backbone.downsampling == "spt"
    switched = keras_smallvit.create_model(f"sl_{family}", num_classes=3, image_size=16, downsampling=plain, **overrides)
    unnamed = lambda model: {k: v for k, v in model.backbone.get_config().items() if k != "name"}  # noqa: E731
    assert unnamed(switched) == unnamed(without)
    assert switched.count_params() == without.count_params() < with_spool.count_params()


@pytest.mark.parametrize(
    "name,tokenizer,attention",
    [
        ("s_vit", "spt", "standard"),
        ("l_vit", "patch", "lsa"),
        ("m_vit", "patch", "diagonal_mask"),
        ("t_vit", "patch", "learnable_temperature"),
        ("sl_vit", "spt", "lsa"),
    ],
)
def test_named_vit_rows_of_the_spt_lsa_paper(name, tokenizer, attention):
    # Table 4 (T-, M-, L-ViT) and Table 5 (S-, L-, SL-ViT).
    entry = keras_smallvit.list_models(details=True)[name]
    assert entry.paper_lr == 3e-3 and preset_table.PRESET_FACTS[name].techniques == entry.techniques
    backbone = keras_smallvit.create_model(name, num_classes=3, image_size=16, **VIT_OVERRIDES).backbone
    assert (backbone.techniques.tokenizer, backbone.techniques.attention) == (tokenizer, attention)
    assert backbone.techniques.suppression is None and backbone.techniques.temperature_multiple == 1.0


def test_sata_paper_rows_through_create_model():
    # Table 3/4/5 (fixed s, s = 0), Table 6 (temperature x2 +- SATA), Table 7 (LSA + SATA).
    fixed = keras_smallvit.create_model(
        "sata_vit", num_classes=3, image_size=16, suppression={"initial_scale": 0.0, "trainable_scale": False},
        **VIT_OVERRIDES,
    ).backbone
    assert fixed.techniques.suppression == {"threshold": 0.1, "initial_scale": 0.0, "trainable_scale": False}
    scales = [layer.suppression_layer.sata_scale for layer, _ in attention_layers(fixed)]
    assert all(not s.trainable and as_numpy(s) == 0.0 for s in scales)
    assert not any(w.name == "sata_scale" for w in fixed.trainable_weights)
    for techniques in ((), ("sata",), ("lsa", "sata")):
        backbone = keras_smallvit.create_model(
            "vit", num_classes=3, image_size=16, techniques=techniques, temperature_multiple=2.0, **VIT_OVERRIDES
        ).backbone
        assert backbone.techniques == TechniqueSpec.from_names(techniques, temperature_multiple=2.0, tokenizer="patch")
        assert all(layer.default_scale == pytest.approx(2.0 * 8**-0.5) for layer, _ in attention_layers(backbone))


def test_the_checks_before_keras_know_the_new_names_and_options():
    from keras_smallvit.layers.techniques import technique_names

    assert preset_table.TECHNIQUES == technique_names()
    for models in (preset_table.PRESET_FACTS, model_facts()):
        preset_table.check_model_settings(models, "vit", ("temperature_multiple",), ("spt", "diagonal_mask"))
        preset_table.check_model_settings(models, "sl_pit", ("downsampling",), ("learnable_temperature",))
        with pytest.raises(ValueError, match="`techniques`.*'diagonal_mask', 'learnable_temperature'"):
            preset_table.check_model_settings(models, "vit", (), ("mask",))
        # S_pool is PiT's and Swin's: the other backbones refuse it by name.
        for name in ("vit", "cait", "t2t", "m_vit"):
            with pytest.raises(ValueError, match=f"Invalid argument `downsampling` for model '{name}'"):
                preset_table.check_model_settings(models, name, ("downsampling",))
    with pytest.raises(ValueError, match="Invalid argument `downsampling` for ViTBackbone"):
        ViTBackbone(**TINY[ViTBackbone], techniques=("spt",), downsampling="conv")
