"""Configs as code: each module here has `get_config() -> TrainConfig`.

`python -m training.train --config <module name>` runs one; `--set key=value`
overrides fields of it.
"""

import importlib
import pkgutil


def list_configs():
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_config(name):
    if name not in list_configs():
        raise ValueError(f"Invalid `config`: {name!r}. Allowed values: {', '.join(list_configs())}.")
    return importlib.import_module(f"{__name__}.{name}").get_config()
