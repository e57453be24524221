"""Every serializable class and every preset registered, with a package that
imports nothing until it is used.

`import keras_smallvit` imports no Keras (its `__init__` is lazy, PEP 562),
so that the Keras-free modules (`keras_smallvit.training.config`,
`keras_smallvit.data`, `keras_smallvit.models.preset_table`, ...) load in
a fraction of a second. The classes a `.keras` file names must still be
registered before Keras loads one, so:

- `register_all()` imports the modules that register them (and the presets);
  every attribute of `keras_smallvit` and of `keras_smallvit.models` calls it
  first, and so do the library's loaders (`ImageClassifier.from_preset`,
  `load_classifier`, the export command line);
- and once Keras and this package are both imported, whichever came first,
  it has run: `keras.saving.load_model(path)` after `import keras_smallvit`
  finds the package's classes, as it did when the package imported them all.
  (`watch_keras_import`: with Keras imported first, `keras_smallvit/__init__`
  calls `register_all` at once; else an import hook calls it after the first
  `import keras`, or, when that import comes from a module of this package,
  once that module's import has finished. It then steps aside.)

Standard library only: `keras_smallvit/__init__` imports it.
"""

import importlib
import sys

from keras_smallvit.utils.import_hooks import LoaderWrappingFinder
from keras_smallvit.utils.import_hooks import WrappedLoader

PACKAGE = "keras_smallvit"
# The modules whose import registers the package's serializable classes (the
# layers, every model module through the presets, the optimizer) and the
# presets: what `import keras_smallvit` imported before it was lazy.
# (`keras_smallvit.aal` registers its own classes when imported, and
# `keras_smallvit.training.device_augmentation` its wrapper on first use.)
REGISTERING_MODULES = (
    "keras_smallvit.layers",
    "keras_smallvit.models.presets",
    "keras_smallvit.optimizers",
)

_state = {"registered": False, "registering": False}


def register_all():
    """Imports every module that registers a serializable class of the
    package, and the model presets (`REGISTERING_MODULES`); imports Keras.
    Cheap after the first call."""
    if _state["registered"] or _state["registering"]:
        return
    _state["registering"] = True
    try:
        for name in REGISTERING_MODULES:
            importlib.import_module(name)
        _state["registered"] = True
    finally:
        _state["registering"] = False
    _remove_hook()


def watch_keras_import():
    """Called by `keras_smallvit/__init__`: `register_all()` now if Keras is
    imported already, else once it is (`_RegisterWithKeras`)."""
    if _state["registered"]:
        return
    if _keras_imported():
        register_all()
    elif not any(isinstance(f, _RegisterWithKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWithKeras())


def _keras_imported():
    keras = sys.modules.get("keras")
    spec = getattr(keras, "__spec__", None)
    return keras is not None and not getattr(spec, "_initializing", False)


def _remove_hook():
    for finder in [f for f in sys.meta_path if isinstance(f, _RegisterWithKeras)]:
        sys.meta_path.remove(finder)


class _RegisterWithKeras(LoaderWrappingFinder):
    """Calls `register_all()` after the first `import keras` has finished,
    and when the import of a module of this package was under way then,
    after the outermost such import has finished (its module would be met
    half-imported otherwise); then steps aside. It watches the imports of
    `keras` and of this package's modules."""

    def __init__(self):
        super().__init__()
        self.depth = 0  # imports of this package's modules under way

    def watches(self, fullname):
        return fullname == "keras" or fullname.startswith(PACKAGE + ".")

    def wrap(self, loader, fullname):
        return _RegisteringLoader(loader, self, ours=fullname != "keras")

    def imported(self, keras_loaded):
        if self.depth == 0 and keras_loaded and self in sys.meta_path:
            register_all()


class _RegisteringLoader(WrappedLoader):
    """The real loader, then `_RegisterWithKeras.imported`."""

    def __init__(self, loader, finder, ours):
        super().__init__(loader)
        self.finder, self.ours = finder, ours

    def run(self, module):
        if self.ours:
            self.finder.depth += 1
        try:
            self.loader.exec_module(module)
        finally:
            if self.ours:
                self.finder.depth -= 1
        # (`keras` itself is not marked imported until its loader returns.)
        self.finder.imported(keras_loaded=not self.ours or _keras_imported())
