"""An import hook that finds nothing itself: it wraps the real loader of the
modules it watches, to run code around their import. The quiet console
(`console`) and the registration after `import keras` (`registration`) are
two of them. Standard library only: it runs before Keras is imported.
"""

import importlib.abc
import importlib.util


class LoaderWrappingFinder(importlib.abc.MetaPathFinder):
    """A `sys.meta_path` entry returning the real finders' spec of the
    modules `watches(fullname)` accepts, its loader wrapped by `wrap`."""

    def __init__(self):
        self.looking = False

    def watches(self, fullname):
        raise NotImplementedError

    def wrap(self, loader, fullname):
        """The `WrappedLoader` that runs instead of `loader`."""
        raise NotImplementedError

    def find_spec(self, fullname, path=None, target=None):
        if self.looking or not self.watches(fullname):
            return None
        self.looking = True
        try:
            spec = importlib.util.find_spec(fullname)  # the real finders' spec
        finally:
            self.looking = False
        if spec is not None and spec.loader is not None:
            spec.loader = self.wrap(spec.loader, fullname)
        return spec


class WrappedLoader(importlib.abc.Loader):
    """The real `loader`, with `run(module)` around its `exec_module`. The
    module gets its own loader back for anything that reads it."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # `get_code`, `is_package`, ... (`python -m`, `inspect`)
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.run(module)

    def run(self, module):
        self.loader.exec_module(module)
