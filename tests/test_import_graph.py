"""The package's import graph has no cycle (`python -m keras_smallvit.utils.import_graph`
prints it), the modules that were in cycles import first in a fresh
interpreter, and the lazy `keras_smallvit` still registers its classes
before a `.keras` file loads.

Static where it can be (the sources parsed, nothing imported); a fresh
Python process where only that shows it (this one has everything imported).
"""

import json
import os
import subprocess
import sys

import pytest

from keras_smallvit.utils import import_graph
from tests.contract import BACKEND

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch", "tensorflow_datasets")
MODELS = "keras_smallvit.models"


def python(code, *args, timeout=180):
    """Runs `code` in a fresh interpreter; its last stdout line as JSON."""
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_import_graph_has_no_cycle():
    graph = import_graph.import_graph()
    assert len(graph) > 50 and "keras_smallvit.models.registry" in graph
    for deferred in (False, True):  # module-level imports, then with those inside functions
        cycles = import_graph.find_cycles(graph, deferred=deferred)
        assert not cycles, [import_graph.describe_cycle(graph, cycle) for cycle, _ in cycles]


def test_the_graph_reads_the_cycles_the_package_had():
    # Issue 29's two cycles, as the sources had them (a deferred import closes each).
    graph = {
        f"{MODELS}.registry": {f"{MODELS}.image_classifier": (True, 91)},
        f"{MODELS}.image_classifier": {f"{MODELS}.backbone": (False, 9), f"{MODELS}.preset_folder": (True, 162)},
        f"{MODELS}.backbone": {f"{MODELS}.registry": (True, 33)},
        f"{MODELS}.preset_folder": {f"{MODELS}.registry": (True, 144)},
    }
    assert import_graph.find_cycles(graph, deferred=False) == []
    (cycle, modules), = import_graph.find_cycles(graph)
    assert modules == sorted(graph) and cycle[0] == cycle[-1] == f"{MODELS}.backbone"
    assert import_graph.describe_cycle(graph, cycle) == (
        f"{MODELS}.backbone -> {MODELS}.registry (deferred, line 33) -> {MODELS}.image_classifier "
        f"(deferred, line 91) -> {MODELS}.backbone"
    )


def test_model_modules_import_the_registry_never_the_reverse():
    graph = import_graph.import_graph()
    registry = set(graph[f"{MODELS}.registry"])
    assert registry <= {"keras_smallvit.layers.techniques", f"{MODELS}.preset_table"} | {
        m for m in graph if m.startswith("keras_smallvit.utils.")
    }, registry
    assert f"{MODELS}.registry" in graph[f"{MODELS}.presets"]
    for cnn in ("resnet", "efficientnet"):  # helpers from utils/, not from the transformers' backbone
        assert f"{MODELS}.backbone" not in graph[f"{MODELS}.cnn.{cnn}"]


def test_the_graph_command_prints_no_cycle():
    result = subprocess.run([sys.executable, "-m", "keras_smallvit.utils.import_graph"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 cycle(s) of module-level imports, 0 counting the deferred ones" in result.stdout


FIRST_IMPORT = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
""" % (set(FRAMEWORKS),)


@pytest.mark.large  # a fresh Keras import each
@pytest.mark.skipif(BACKEND != "jax", reason="Python's import order, the same under every KERAS_BACKEND: "
                    "one backend (the quickest to import: JAX 8 s, torch 14 s a process here) is enough")
@pytest.mark.parametrize("module", ["registry", "image_classifier", "backbone", "preset_folder"])
def test_a_module_that_was_in_a_cycle_imports_first_in_a_fresh_interpreter(module):
    assert "keras" in python(FIRST_IMPORT, f"{MODELS}.{module}")


@pytest.mark.parametrize("module", [
    "keras_smallvit", "keras_smallvit.training.config", "keras_smallvit.data", f"{MODELS}.preset_table",
    "keras_smallvit.utils.technique_names", "keras_smallvit.export",
])
def test_the_keras_free_modules_import_no_framework(module):
    assert python(FIRST_IMPORT, module) == []


LOAD = """
import json, sys
if sys.argv[2] == "package":
    import keras_smallvit
    import keras
elif sys.argv[2] == "keras_first":
    import keras
    import keras_smallvit
else:  # a module of the package that imports Keras itself
    from keras_smallvit.models.image_classifier import ImageClassifier
    import keras
model = keras.saving.load_model(sys.argv[1])
print(json.dumps([type(model).__name__, type(model.backbone).__name__]))
"""


@pytest.mark.large  # three fresh Keras imports
@pytest.mark.skipif(BACKEND != "jax", reason="the package's registration on import, the same under every "
                    "KERAS_BACKEND: one backend (the quickest to import, as above) is enough")
def test_a_saved_model_loads_in_a_fresh_process_after_import_keras_smallvit(tmp_path):
    import keras_smallvit

    model = keras_smallvit.create_model("sl_vit", num_classes=3, image_size=16, depth=1, hidden_dim=16,
                                        num_heads=2, head_dim=8)
    path = str(tmp_path / "model.keras")
    model.save(path)
    for order in ("package", "keras_first", "module"):
        assert python(LOAD, path, order) == ["ImageClassifier", "ViTBackbone"], order


def test_the_package_attributes_are_lazy_and_complete():
    import keras_smallvit
    from keras_smallvit import models

    assert keras_smallvit.create_model is models.create_model and "sl_vit" in keras_smallvit.list_models()
    assert set(keras_smallvit.__all__) <= set(dir(keras_smallvit))
    assert all(hasattr(keras_smallvit, name) for name in keras_smallvit.__all__)
    assert all(hasattr(models, name) for name in models.__all__)
    with pytest.raises(AttributeError, match="nosuch"):
        keras_smallvit.nosuch
