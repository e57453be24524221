"""One upgrader for old checkpoints (`keras_smallvit.utils.legacy`): every
form an older version saved loads through it, into today's config;
constructors take only today's arguments. (The files of the code before the
spec: tests/models/test_pre_spec_compat.py.)"""

import json
import zipfile

import keras
import numpy as np
import pytest

from keras_smallvit.layers import MultiHeadSelfAttention
from keras_smallvit.layers import TechniqueSpec
from keras_smallvit.layers import TransformerBlock
from keras_smallvit.layers.suppression import SCALE_NAME
from keras_smallvit.layers.suppression import TrivialAttentionSuppression
from keras_smallvit.models import CaiTBackbone
from keras_smallvit.models import PiTBackbone
from keras_smallvit.models import SwinBackbone
from keras_smallvit.models import T2TBackbone
from keras_smallvit.models import ViTBackbone
from keras_smallvit.models.cait import CaiTBlock
from keras_smallvit.models.t2t import TokenTransformer
from keras_smallvit.training.config import TrainConfig
from keras_smallvit.utils import legacy
from tests.contract import as_numpy
from tests.layers.test_suppression import save_as_legacy_file

SATA = {"threshold": 0.2, "initial_scale": 0.7}
OLD_SATA = {**SATA, "scale_lr_multiplier": 0.5}
TINY_VIT = dict(image_size=16, patch_size=4, hidden_dim=16, depth=1, num_heads=2, head_dim=8)


def test_upgrade_config_turns_each_old_form_into_todays():
    # Before the spec: the technique options as flat keys, SATA's c in `suppression`.
    old = {"depth": 2, "tokenizer": "spt", "attention": "lsa", "suppression": OLD_SATA,
           "context_broadcasting": None, "context_broadcasting_position": "mlp_output"}
    config, units = legacy.upgrade_config(old)
    assert units == 0.5
    assert config == {"depth": 2, "techniques": {"tokenizer": "spt", "attention": "lsa", "suppression": SATA,
                                                 "context_broadcasting": None,
                                                 "context_broadcasting_position": "mlp_output"}}
    assert old["suppression"] == OLD_SATA  # the given config is not changed
    # After the spec, saved again by the versions before the upgrader: c in the spec's `suppression`.
    assert legacy.upgrade_config({"techniques": {"suppression": OLD_SATA}}) == ({"techniques": {"suppression": SATA}}, 0.5)
    assert legacy.upgrade_config({"suppression": OLD_SATA, "num_heads": 2}, "attention") == (
        {"suppression": SATA, "num_heads": 2}, 0.5)
    assert legacy.upgrade_config(OLD_SATA, "suppression") == (SATA, 0.5)
    assert legacy.upgrade_config({"suppression": OLD_SATA}, "spec") == ({"suppression": SATA}, 0.5)
    # Today's configs pass unchanged.
    today = TransformerBlock(2, 4, techniques=("lsa", "sata")).get_config()
    assert legacy.upgrade_config(today) == (today, None)
    assert legacy.upgrade_config(SATA, "suppression") == (SATA, None)
    with pytest.raises(ValueError, match="`techniques`"):
        legacy.upgrade_config({"techniques": ["spt"], "attention": "lsa"})
    with pytest.raises(ValueError, match="`kind`"):
        legacy.upgrade_config({}, "block")


def old_flat(config, options):
    """`config` in the format before the spec: `techniques` as flat keys (the old ones)."""
    config = dict(config)
    techniques = TechniqueSpec.from_config(config.pop("techniques"))
    config.update({name: getattr(techniques, name) for name in options})
    return config


BLOCK_OPTIONS = ("attention", "suppression", "context_broadcasting", "context_broadcasting_position")
SPEC = TechniqueSpec(tokenizer="spt", attention="lsa", suppression=SATA, context_broadcasting={"ratio": 0.3})
BLOCK_SPEC = SPEC.replace(tokenizer=None)  # the blocks' old options: no tokenizer, default shifts


@pytest.mark.parametrize(
    "make,old_form,kind",
    [
        (lambda: TrivialAttentionSuppression(**SATA), lambda c: {**c, "scale_lr_multiplier": 0.5}, "suppression"),
        (lambda: MultiHeadSelfAttention(2, 4, suppression=SATA), lambda c: {**c, "suppression": OLD_SATA},
         "attention"),
        (lambda: TransformerBlock(2, 4, techniques=BLOCK_SPEC), lambda c: old_flat(c, BLOCK_OPTIONS), "techniques"),
        (lambda: CaiTBlock(2, 4, techniques=BLOCK_SPEC), lambda c: old_flat(c, BLOCK_OPTIONS), "techniques"),
        (lambda: TokenTransformer(8, techniques=BLOCK_SPEC.replace(context_broadcasting=None)),
         lambda c: old_flat(c, ("attention", "suppression")), "techniques"),
        (lambda: ViTBackbone(**TINY_VIT, techniques=SPEC), lambda c: old_flat(c, legacy.FLAT_TECHNIQUE_OPTIONS),
         "techniques"),
        (lambda: SPEC, lambda c: {**c, "suppression": OLD_SATA}, "spec"),
    ],
    ids=["sata", "attention", "block", "cait_block", "token_transformer", "backbone", "spec"],
)
def test_each_class_loads_its_old_config_through_the_one_upgrader(monkeypatch, make, old_form, kind):
    today = make()
    old = old_form(today.get_config())
    calls, upgrade = [], legacy.upgrade_config
    monkeypatch.setattr(legacy, "upgrade_config", lambda config, kind: calls.append(kind) or upgrade(config, kind))
    restored = type(today).from_config(old)
    assert calls[0] == kind
    assert restored.get_config() == today.get_config()


@pytest.mark.parametrize("backbone_class", [ViTBackbone, PiTBackbone, SwinBackbone, CaiTBackbone, T2TBackbone])
def test_constructors_take_only_todays_arguments(backbone_class):
    # Raised before the graph is built.
    with pytest.raises(ValueError, match=f"`attention` for {backbone_class.__name__}.*`techniques`"):
        backbone_class(image_size=32, attention="lsa")


def test_layer_constructors_name_the_argument_that_replaced_an_old_one():
    for make, name in [
        (lambda: TransformerBlock(2, 4, suppression=True), "suppression"),
        (lambda: TokenTransformer(8, attention="lsa"), "attention"),
    ]:
        with pytest.raises(ValueError, match=f"`{name}`.*`techniques`"):
            make()
    with pytest.raises(ValueError, match="`scale_lr_multiplier`.*learning_rate_multipliers"):
        TrivialAttentionSuppression(scale_lr_multiplier=0.5)


def test_a_model_of_old_blocks_loads_with_the_old_scale_and_saves_in_todays_format(tmp_path):
    # A model of the package's layers (not a backbone): the block is built after
    # `from_config`, and SATA's `s = c * u` still reaches its scale at weight loading.
    block = TransformerBlock(2, 4, techniques={"attention": "lsa", "suppression": SATA}, name="block")
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, block(inputs))
    path, flat_path, old_path = (str(tmp_path / f"{name}.keras") for name in ("new", "flat", "old"))
    model.save(path)
    with zipfile.ZipFile(path) as source:
        files = {name: source.read(name) for name in source.namelist()}
    config = json.loads(files["config.json"])
    (layer,) = [layer for layer in config["config"]["layers"] if layer["class_name"] == "TransformerBlock"]
    layer["config"] = old_flat(layer["config"], BLOCK_OPTIONS)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(flat_path, "w") as target:
        for name, data in files.items():
            target.writestr(name, data)
    multiplier, u = 0.25, np.float32(1.2)
    save_as_legacy_file(flat_path, old_path, multiplier, u)  # c in `suppression`, u stored
    s = u * np.float32(multiplier)  # the old layer's float32 product
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    block.attention_layer.suppression_layer.sata_scale.assign(s)

    loaded = keras.saving.load_model(old_path)
    assert loaded.get_layer("block").techniques == block.techniques
    (scale,) = [v for v in loaded.weights if v.name == SCALE_NAME]
    np.testing.assert_array_equal(as_numpy(scale), s)
    np.testing.assert_allclose(as_numpy(loaded(x)), as_numpy(model(x)), rtol=1e-6, atol=1e-6)
    again = str(tmp_path / "again.keras")
    loaded.save(again)
    with zipfile.ZipFile(again) as saved:
        assert b"scale_lr_multiplier" not in saved.read("config.json")
    (scale,) = [v for v in keras.saving.load_model(again).weights if v.name == SCALE_NAME]
    np.testing.assert_array_equal(as_numpy(scale), s)


def test_an_old_run_config_loads_through_the_upgrader():
    today = TrainConfig(model="sata_vit", model_overrides={"suppression": SATA})
    values = json.loads(today.to_json())
    values["model_overrides"]["suppression"] = OLD_SATA  # the learning rate of s is `sata_lr` today
    assert TrainConfig.from_json(json.dumps(values)) == today
