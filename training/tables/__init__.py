"""The papers' tables as data (configs as code, like `training/configs/`).

Each module here defines `TABLE`, a `Table`: its rows (a model and the
settings that make the row, with the paper's published value per dataset)
and the datasets it covers. `python -m training.reproduce TABLE` runs it;
`--list` names them.

A row's run is the dataset's config (`training/configs/<dataset>_sl_vit`,
the papers' recipe for that dataset) with the table's settings, then the
row's, then `model=<row.model>`: every option a row needs is an ordinary
`TrainConfig` field or `model.<arg>` of `create_model`.
"""

import dataclasses
import importlib
import pkgutil
import re
from typing import Optional


@dataclasses.dataclass(frozen=True, eq=False)  # rows are compared (and hashed) as themselves
class Row:
    """One published row.

    Attributes:
        name: the paper's name of the row ("SL-ViT").
        model: a registered model (`keras_smallvit.list_models()`).
        settings: `key=value` overrides of the run (`TrainConfig` fields,
            `model.<arg>`), after the table's.
        paper: `{dataset: top-1 %}` as published (a dataset missing: no
            published value).
        configs: `{dataset: config}` of `training/configs/` for this row
            (its recipe differs from the table's), else the table's.
    """

    name: str
    model: str
    settings: tuple = ()
    paper: dict = dataclasses.field(default_factory=dict)
    configs: dict = dataclasses.field(default_factory=dict)

    @property
    def slug(self):
        """The row's name as a folder name ("SL-PiT w/ S_pool" -> "sl-pit_w_s_pool")."""
        return re.sub(r"[^a-z0-9.+-]+", "_", self.name.lower()).strip("_")


@dataclasses.dataclass(frozen=True, eq=False)  # compared (and hashed) as itself
class Table:
    """One table of a paper.

    Attributes:
        name: the module name (`python -m training.reproduce NAME`).
        title: what it is, with the paper.
        source: where the numbers are published (paper, table).
        datasets: the datasets it covers (columns).
        rows: its `Row`s.
        settings: `key=value` overrides for every row (e.g. the recipe a
            table changes), before the row's.
        base_configs: `{dataset: config}` of `training/configs/`; default
            `<dataset>_sl_vit`.
        metric: what `Row.paper` holds ("best" top-1 over the epochs, as the
            papers' code reports).
    """

    name: str
    title: str
    source: str
    datasets: tuple
    rows: tuple
    settings: tuple = ()
    base_configs: dict = dataclasses.field(default_factory=dict)
    metric: str = "best"
    notes: Optional[str] = None

    def base_config(self, row, dataset):
        """The `training/configs/` module a row's run on `dataset` starts from."""
        default = f"{'svhn' if dataset == 'svhn_cropped' else dataset}_sl_vit"
        return row.configs.get(dataset, self.base_configs.get(dataset, default))


def list_tables():
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_table(name):
    if name not in list_tables():
        raise ValueError(f"Invalid `table`: {name!r}. Allowed values: {', '.join(list_tables())}.")
    return importlib.import_module(f"{__name__}.{name}").TABLE
