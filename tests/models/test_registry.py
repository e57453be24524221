import pytest

import keras_smallvit
from keras_smallvit.models import ViTBackbone


def test_required_names_are_registered():
    names = keras_smallvit.list_models()
    for name in ("vit", "sl_vit", "sata_vit", "cb_vit"):
        assert name in names
    assert names == sorted(names)


@pytest.mark.parametrize(
    "name,tokenizer,attention,sata,cb",
    [
        ("vit", "patch", "standard", False, False),
        ("sl_vit", "spt", "lsa", False, False),
        ("sata_vit", "patch", "standard", True, False),
        ("cb_vit", "patch", "standard", False, True),
    ],
)
def test_variants_switch_on_their_techniques_with_paper_defaults(name, tokenizer, attention, sata, cb):
    backbone = keras_smallvit.create_model(name, num_classes=10, image_size=32, depth=1).backbone
    assert isinstance(backbone, ViTBackbone)
    assert (backbone.techniques.tokenizer, backbone.techniques.attention) == (tokenizer, attention)
    assert backbone.techniques.suppression == ({"threshold": 0.1, "initial_scale": 0.5} if sata else None)
    assert backbone.techniques.context_broadcasting == ({"ratio": 0.5} if cb else None)
    assert backbone.patch_size == (4, 4) and backbone.hidden_dim == 192 and backbone.num_heads == 12


def test_any_technique_combination_and_overrides():
    model = keras_smallvit.create_model(
        "vit",
        num_classes=10,
        image_size=64,
        techniques=("cb", "sata", "spt", "lsa"),
        suppression={"threshold": 0.05},
        depth=2,
        head_dropout=0.1,
    )
    backbone = model.backbone
    assert backbone.techniques.tokenizer == "spt" and backbone.techniques.attention == "lsa"
    assert backbone.techniques.suppression == {"threshold": 0.05, "initial_scale": 0.5}
    assert backbone.techniques.context_broadcasting == {"ratio": 0.5}
    assert backbone.patch_size == (8, 8) and backbone.depth == 2 and model.head_dropout == 0.1


def test_techniques_replace_the_variant_defaults():
    backbone = keras_smallvit.create_model("sl_vit", num_classes=3, image_size=32, techniques=(), depth=1).backbone
    assert backbone.techniques.tokenizer == "patch" and backbone.techniques.attention == "standard"


@pytest.mark.parametrize(
    "name,kwargs,argument",
    [
        ("vitt", {}, "name"),
        ("vit", {"techniques": ("spt", "mixup")}, "techniques"),
        ("vit", {"image_size": 36}, "image_size"),
        ("vit", {"image_size": 32, "patch_size": 3}, "image_size"),
        ("vit", {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_requests_raise_value_error_naming_the_argument(name, kwargs, argument):
    args = {"num_classes": 10, "image_size": 32, **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}"):
        keras_smallvit.create_model(name, **args)


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("sl_vit", dict(depth=1, hidden_dim=16, num_heads=2, head_dim=8)),
        ("resnet56", dict(stage_blocks=(1, 1, 1))),
    ],
)
def test_mixed_precision_survives_save_and_load(tmp_path, name, overrides):
    # keras.Model(inputs, outputs, dtype=...) drops `dtype`; our models keep it,
    # so their config (which rebuilds every layer) reloads them mixed.
    import keras
    import numpy as np

    model = keras_smallvit.create_model(name, num_classes=3, image_size=16, dtype="mixed_bfloat16", **overrides)
    assert model.dtype_policy.name == "mixed_bfloat16"
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.dtype_policy.name == "mixed_bfloat16"
    assert {layer.dtype_policy.name for layer in reloaded.layers[1:-1]} == {"mixed_bfloat16"}
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(model(x)))


@pytest.mark.parametrize("run", ["eager", "compiled"])
def test_empty_batch_through_a_sata_model_gives_empty_logits(run):
    # SATA's row maximum used to raise "Cannot compute the max of an empty
    # tensor" (TF eager, PyTorch) for a batch of 0 images. Compiled: XLA on
    # TF/JAX (where SATA runs fused with the softmax); PyTorch runs eagerly.
    import keras
    import numpy as np

    from tests.backend_utils import compiled

    model = keras_smallvit.create_model(
        "sata_vit", num_classes=10, image_size=16, depth=1, hidden_dim=16, num_heads=2, head_dim=8
    )
    assert model.backbone.techniques.suppression is not None
    forward = compiled(lambda images: model(images, training=False)) if run == "compiled" else model
    logits = keras.ops.convert_to_numpy(forward(np.zeros((0, 16, 16, 3), "float32")))
    assert logits.shape == (0, 10) and logits.dtype == np.float32
