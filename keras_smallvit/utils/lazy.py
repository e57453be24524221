"""Lazy package attributes (PEP 562), standard library only."""

import importlib


def lazy_attributes(package, exports, submodules=(), before=None):
    """`(__getattr__, __dir__)` for the package `package`: a name of
    `exports` (`{name: module}`) is imported from its module on first use
    (after `before()`, when given), a name of `submodules` is the submodule,
    imported alone (`from package import submodule` asks for the attribute
    first: it must import nothing else)."""

    def __getattr__(name):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in exports:
            if before is not None:
                before()
            value = getattr(importlib.import_module(exports[name]), name)
            vars(importlib.import_module(package))[name] = value  # once
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*vars(importlib.import_module(package)), *exports, *submodules})

    return __getattr__, __dir__
