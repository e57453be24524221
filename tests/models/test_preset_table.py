"""The presets' data table (`keras_smallvit.models.preset_table`, no Keras)
equals what the model classes and the registered presets give, so that the
command line's check before Keras (`TrainConfig.check_fields()`)
can never drift from the full one."""

import ast
import inspect
import pprint

import pytest

from keras_smallvit.layers import techniques as layer_techniques
from keras_smallvit.layers.techniques import TechniqueSpec
from keras_smallvit.models import preset_table
from keras_smallvit.models.presets import PRESETS
from keras_smallvit.models.registry import constructor_arguments
from keras_smallvit.models.registry import list_models
from keras_smallvit.models.registry import model_facts
from keras_smallvit.utils import technique_names


def class_arguments_of(classifier):
    classes = {p.model_class for p in PRESETS.values() if p.classifier == classifier}
    exclude = ("num_classes", "image_size") if classifier else ("image_size",)
    return {c.__name__: constructor_arguments(c, exclude=exclude) for c in sorted(classes, key=lambda c: c.__name__)}


def test_the_table_equals_the_presets():
    expected = {
        "BACKBONE_ARGUMENTS": class_arguments_of(classifier=False),
        "CLASSIFIER_ARGUMENTS": class_arguments_of(classifier=True),
        "PRESET_ROWS": {
            name: (p.model_class.__name__, p.techniques, p.paper_lr) for name, p in sorted(PRESETS.items())
        },
        "TECHNIQUE_FIELDS": TechniqueSpec.field_names(),
    }
    for name, value in expected.items():
        # On a change of the presets or a model's constructor: paste the printed value.
        assert getattr(preset_table, name) == value, f"{name} = {pprint.pformat(value, width=110)}"


def test_every_registered_preset_has_the_same_arguments_and_facts():
    assert sorted(preset_table.PRESET_FACTS) == list_models()
    for name, preset in PRESETS.items():
        facts = preset_table.PRESET_FACTS[name]
        assert facts.arguments == tuple(sorted(set(preset.arguments()))), name
        assert facts == model_facts(name), name
        assert facts.classifier == preset.classifier and facts.techniques == preset.techniques


def imports_of(module):
    tree = ast.parse(inspect.getsource(module))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return imported | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_the_table_module_imports_no_framework():
    # Plain data: the command line imports it before Keras (training/train.py's preflight).
    allowed = {"dataclasses", "typing", "keras_smallvit.utils.validation", "keras_smallvit.utils.technique_names"}
    assert imports_of(preset_table) <= allowed, imports_of(preset_table)
    assert imports_of(technique_names) == {"sys"}


def test_one_technique_vocabulary():
    # The built-in names are one tuple; the layers' list is built from it.
    assert preset_table.TECHNIQUES is technique_names.TECHNIQUES
    assert layer_techniques.technique_names() == technique_names.TECHNIQUES == technique_names.known_techniques()


@pytest.mark.parametrize(
    "model,overrides,techniques",
    [
        ("vitt", {}, None),
        ("vit", {"depthh": 6}, None),
        ("resnet56", {"depth": 3}, None),
        ("vit", {}, ("spt", "bogus")),
        ("resnet56", {}, ("spt",)),
    ],
)
def test_table_and_registry_give_the_same_message(model, overrides, techniques):
    messages = []
    for models in (preset_table.PRESET_FACTS, model_facts()):
        with pytest.raises(ValueError) as error:
            preset_table.check_model_settings(models, model, overrides, techniques)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
