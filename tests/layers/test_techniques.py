"""`TechniqueSpec`, the one vocabulary of the techniques, and what adding a
sixth technique takes: `ResidualScale` below is written here, in this file
only, and runs through the spec and the block factory into every backbone.

Cheap: config round trips, symbolic builds and eager calls of one block."""

import dataclasses

import keras
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.layers import BlockTechnique
from keras_smallvit.layers import TechniqueSpec
from keras_smallvit.layers import TransformerBlock
from keras_smallvit.layers import register_block_technique
from keras_smallvit.layers.techniques import unregister_block_technique
from keras_smallvit.models import CaiTBackbone
from keras_smallvit.models import ViTBackbone
from keras_smallvit.utils.legacy import FLAT_TECHNIQUE_OPTIONS
from tests.contract import as_numpy

TINY_VIT = dict(image_size=16, patch_size=4, hidden_dim=16, depth=2, num_heads=2, head_dim=8)


# === A toy sixth technique: the whole of it ===
@keras.saving.register_keras_serializable(package="tests")
class ResidualScale(keras.layers.Layer):
    """Scales a residual branch by one learned scalar (a toy technique).

    Args:
        initial_value: the scalar's initial value.
    """

    def __init__(self, initial_value=0.5, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(), initializer=keras.initializers.Constant(self.initial_value)
        )

    def call(self, x):
        return x * keras.ops.cast(self.scale, x.dtype)

    def get_config(self):
        return {**super().get_config(), "initial_value": self.initial_value}


RESIDUAL_SCALE = BlockTechnique(
    name="rs", option="residual_scale", layer=ResidualScale, keys=("initial_value",), defaults={"initial_value": 0.5}
)


@pytest.fixture
def residual_scale():
    register_block_technique(RESIDUAL_SCALE)
    try:
        yield RESIDUAL_SCALE
    finally:
        unregister_block_technique(RESIDUAL_SCALE.option)


def tokens():
    return np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")


def test_a_new_technique_runs_through_the_spec_and_block_factory_into_a_backbone(residual_scale):
    spec = TechniqueSpec.from_names(("spt", "lsa", "rs"))
    assert spec.residual_scale == {"initial_value": 0.5} and spec.residual_scale_position == "mlp_output"
    assert spec.names == ("spt", "lsa", "rs")
    assert TechniqueSpec.from_config(spec.get_config()) == spec
    # One scalar per block, nothing else: the block factory added the layer.
    plain = ViTBackbone(**TINY_VIT, techniques=("spt", "lsa"))
    backbone = ViTBackbone(**TINY_VIT, techniques=spec)
    assert backbone.count_params() == plain.count_params() + TINY_VIT["depth"]
    assert isinstance(backbone.get_layer("block_0").residual_scale_layer, ResidualScale)
    restored = ViTBackbone.from_config(backbone.get_config())
    assert restored.get_config() == backbone.get_config()
    # The registry takes it by name like the paper's four, and its options as overrides.
    model = keras_smallvit.create_model(
        "pit", num_classes=3, image_size=16, techniques=("rs",), residual_scale={"initial_value": 0.25},
        hidden_dim=8, depths=(1, 1), num_heads=(1, 2), head_dim=4,
    )
    assert model.backbone.techniques.residual_scale == {"initial_value": 0.25}
    # CaiT's class attention keeps it too (it does not mix tokens).
    cait = CaiTBackbone(**{**TINY_VIT, "class_depth": 1}, techniques=("rs",))
    assert cait.get_layer("class_block_0").residual_scale_layer is not None


def test_the_new_technique_acts_at_its_position(residual_scale):
    x = tokens()
    plain = TransformerBlock(2, 4)
    plain(x)
    for position in ("mlp_output", "attention_output", "block_output"):
        spec = TechniqueSpec(residual_scale={"initial_value": 1.0}, residual_scale_position=position)
        block = TransformerBlock(2, 4, techniques=spec)
        block(x)
        for name in ("attention_norm", "attention_layer", "mlp_norm", "mlp_dense_1", "mlp_dense_2"):
            getattr(block, name).set_weights(getattr(plain, name).get_weights())
        np.testing.assert_allclose(as_numpy(block(x)), as_numpy(plain(x)), atol=1e-6)  # scale 1: identity
        block.residual_scale_layer.scale.assign(0.0)
        if position == "block_output":
            np.testing.assert_array_equal(as_numpy(block(x)), 0.0)
        else:
            assert not np.allclose(as_numpy(block(x)), as_numpy(plain(x)))


def test_bad_options_of_the_new_technique_raise_value_error_naming_them(residual_scale):
    with pytest.raises(ValueError, match="`residual_scale_position`"):
        TechniqueSpec(residual_scale=True, residual_scale_position="input")
    with pytest.raises(ValueError, match="`residual_scale` keys"):
        TechniqueSpec(residual_scale={"scale": 2.0})


# === The spec of the paper's four ===


def test_names_overrides_and_fields_resolve_to_one_spec():
    want = TechniqueSpec(
        tokenizer="spt",
        attention="lsa",
        suppression={"threshold": 0.05, "initial_scale": 0.5},
        context_broadcasting={"ratio": 0.5},
    )
    assert TechniqueSpec.from_names(("cb", "sata", "spt", "lsa"), suppression={"threshold": 0.05}) == want
    assert TechniqueSpec.resolve(want.get_config()) == want
    assert TechniqueSpec.resolve(None, **want.get_config()) == want
    model = keras_smallvit.create_model(
        "vit", num_classes=3, image_size=16, techniques=want, depth=1, hidden_dim=16, num_heads=2, head_dim=8
    )
    assert model.backbone.techniques == want


def test_an_old_flat_backbone_config_loads_into_the_spec():
    new = ViTBackbone(**TINY_VIT, techniques=("spt", "lsa", "sata", "cb"))
    old = {k: v for k, v in new.get_config().items() if k != "techniques"}
    # The config format before the spec: its technique options as flat keys.
    old.update({k: v for k, v in new.techniques.get_config().items() if k in FLAT_TECHNIQUE_OPTIONS})
    restored = ViTBackbone.from_config(old)
    assert restored.get_config() == new.get_config()
    assert restored.techniques.tokenizer == "spt"
    assert restored.techniques.suppression == {"threshold": 0.1, "initial_scale": 0.5}


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"tokenizer": "conv"}, "tokenizer"),
        ({"attention": "linear"}, "attention"),
        ({"suppression": {"threshold": 1.5}}, "threshold"),
        ({"suppression": "yes"}, "suppression"),
        ({"context_broadcasting": {"ratio": -0.5}}, "ratio"),
        ({"context_broadcasting_position": "input"}, "context_broadcasting_position"),
        ({"shift_directions": "up"}, "shift_directions"),
        ({"shift_ratio": 0.0}, "shift_ratio"),
        ({"mixup": True}, "mixup"),
    ],
)
def test_bad_spec_fields_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}"):
        TechniqueSpec(**kwargs)


def test_bad_techniques_argument_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="`techniques`"):
        TechniqueSpec.from_names(("spt", "mixup"))
    with pytest.raises(ValueError, match="`techniques`"):
        TechniqueSpec.resolve(3)


# === The papers' ablation rows (issue 31) ===


@pytest.mark.parametrize(
    "names,attention,mask,temperature",
    [
        (("diagonal_mask",), "diagonal_mask", True, False),  # M-ViT
        (("learnable_temperature",), "learnable_temperature", False, True),  # T-ViT
        (("lsa",), "lsa", True, True),  # L-ViT
        (("learnable_temperature", "diagonal_mask"), "lsa", True, True),  # both elements are LSA
        ((), "standard", False, False),
    ],
)
def test_lsa_elements_by_name_set_the_attention_options(names, attention, mask, temperature):
    spec = TechniqueSpec.from_names(names)
    assert spec.attention == attention
    assert spec.names == (() if attention == "standard" else (attention,))
    assert TechniqueSpec.from_names(spec.names) == spec
    options = spec.attention_options()
    assert (options["diagonal_mask"], options["learnable_temperature"]) == (mask, temperature)
    # Attention from a class token to patches has no diagonal (CaiT's class attention).
    assert spec.attention_options(self_attention=False)["diagonal_mask"] is False
    assert spec.attention_options()["temperature_multiple"] == 1.0


def test_temperature_multiple_is_a_spec_field_that_round_trips():
    spec = TechniqueSpec.from_names(("lsa", "sata"), temperature_multiple=3.0)
    assert spec.temperature_multiple == 3.0 and spec.attention_options()["temperature_multiple"] == 3.0
    assert "temperature_multiple" in TechniqueSpec.field_names()
    assert TechniqueSpec.from_config(spec.get_config()) == spec
    assert spec != spec.replace(temperature_multiple=1.0)
    # Configs written before the field load with the multiple 1.
    old = {k: v for k, v in spec.get_config().items() if k != "temperature_multiple"}
    assert TechniqueSpec.from_config(old).temperature_multiple == 1.0


def test_lsa_element_names_cannot_be_taken_by_a_block_technique():
    for name in ("diagonal_mask", "learnable_temperature"):
        with pytest.raises(ValueError, match="already registered"):
            register_block_technique(dataclasses.replace(RESIDUAL_SCALE, name=name))
    assert "residual_scale" not in keras_smallvit.layers.techniques.BLOCK_TECHNIQUES


def test_unknown_spec_field_lists_every_field():
    with pytest.raises(ValueError, match="`spt_pooling`") as error:
        TechniqueSpec(spt_pooling=False)
    assert ", ".join(TechniqueSpec.field_names()) in str(error.value)


def test_a_registered_technique_is_one_vocabulary_for_configs_and_models(residual_scale):
    # One vocabulary (`keras_smallvit.utils.technique_names.known_techniques`): a training config
    # accepts what `create_model` accepts, and both refuse an unknown name with the same message.
    from keras_smallvit.training import TrainConfig

    TrainConfig(model="vit", techniques=("spt", "rs")).validate()
    TrainConfig(model="vit", techniques=("rs",)).check_fields()
    model = keras_smallvit.create_model("vit", num_classes=3, image_size=16, techniques=("rs",), depth=1)
    assert model.backbone.techniques.names == ("rs",)
    messages = []
    for check in (
        lambda: TrainConfig(model="vit", techniques=("rs", "bogus")).validate(),
        lambda: keras_smallvit.create_model("vit", num_classes=3, image_size=16, techniques=("rs", "bogus")),
    ):
        with pytest.raises(ValueError) as error:
            check()
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "'rs'" in messages[0] and "'bogus'" in messages[0], messages
