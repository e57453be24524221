"""One upgrader for old checkpoints (big_vision's `fix_old_checkpoints`).

Every form an older version of the package saved passes through here at
load time and comes out as today's; constructors take only today's
arguments. The forms (docs/models.md, "Files of older versions"):

- Flat technique options (before the `TechniqueSpec`, 2026-12-02): the
  configs of the backbones, `TransformerBlock` (and its subclasses) and
  T2T's `TokenTransformer` held `tokenizer`, `attention`, `suppression`,
  `shift_directions`, `shift_ratio`, `context_broadcasting` and
  `context_broadcasting_position` as their own keys; today they are the
  `techniques` config (`upgrade_config` moves them there).
- SATA's `scale_lr_multiplier` `c` (before 2026-12-01, and in files saved
  again by the versions until this upgrader): a `suppression` config held
  `c`, and the weights file `u = s / c` instead of the scale `s`. The
  upgrader drops `c` from the config; the weights need a hook at weight
  loading, which no config change can reach: the loaded layer remembers
  `c` (`mark_stored_scale_units`) and its suppression layers read
  `s = c * u` (`pop_stored_scale_units`, in
  `TrivialAttentionSuppression.load_own_variables`). Saved again, the
  model writes `s` and no `c`: today's format.
- `TrainConfig` files (`config.json` of a run folder): a `model_overrides`
  `suppression` with `scale_lr_multiplier` (the learning rate of `s` is
  `sata_lr` today) (`upgrade_train_config`).

Standard library only: `TrainConfig` reads its files with it before Keras.
"""

import functools

# The technique options of the code before the spec, by their old config
# keys (a record of that format: not today's spec fields, which grow).
FLAT_TECHNIQUE_OPTIONS = (
    "tokenizer",
    "attention",
    "suppression",
    "shift_directions",
    "shift_ratio",
    "context_broadcasting",
    "context_broadcasting_position",
)
# SATA's old learning-rate multiplier of `s`, and the unit of the stored scale.
SCALE_LR_MULTIPLIER = "scale_lr_multiplier"
# The attribute of SATA's scale variable (`TrivialAttentionSuppression.sata_scale`).
SCALE_VARIABLE = "sata_scale"
# What `loads_old_configs` upgrades: configs that take `techniques`, an
# attention's (`suppression` argument), SATA's own, the spec's.
CONFIG_KINDS = ("techniques", "attention", "suppression", "spec")
# The attribute holding `c` between loading the config and the weights.
_UNITS = "_stored_scale_units"


def _without_multiplier(suppression):
    """`(suppression without c, c or None)` of a `suppression` value."""
    if not isinstance(suppression, dict) or SCALE_LR_MULTIPLIER not in suppression:
        return suppression, None
    suppression = dict(suppression)
    return suppression, float(suppression.pop(SCALE_LR_MULTIPLIER))


def upgrade_config(config, kind="techniques"):
    """Today's form of an old layer, model or spec config.

    Args:
        config: the `get_config()` dict an older version saved (not changed).
        kind: what the config belongs to, one of `CONFIG_KINDS`:
            `"techniques"` (a class taking `techniques`: the backbones,
            `TransformerBlock`, `TokenTransformer`), `"attention"`
            (`MultiHeadSelfAttention` and subclasses), `"suppression"`
            (`TrivialAttentionSuppression`) or `"spec"` (`TechniqueSpec`).

    Returns:
        `(config, scale_units)`: today's config (a new dict; the same values
        for a config of today), and SATA's stored-scale multiplier `c` (None
        for today's files, where the weights hold `s` itself).
    """
    if kind not in CONFIG_KINDS:
        raise ValueError(f"Invalid `kind`: {kind!r}. Allowed values: {', '.join(map(repr, CONFIG_KINDS))}.")
    config = dict(config)
    if kind == "suppression":
        multiplier = config.pop(SCALE_LR_MULTIPLIER, None)
        return config, None if multiplier is None else float(multiplier)
    if kind in ("attention", "spec"):
        if "suppression" not in config:
            return config, None
        config["suppression"], units = _without_multiplier(config["suppression"])
        return config, units
    flat = {name: config.pop(name) for name in FLAT_TECHNIQUE_OPTIONS if name in config}
    techniques = config.get("techniques")
    if not flat and not isinstance(techniques, dict):
        return config, None
    if techniques is not None and not isinstance(techniques, dict):
        raise ValueError(
            f"Invalid config: `techniques` {techniques!r} with the old flat options {sorted(flat)}. "
            "Allowed: the flat options alone (files before the technique spec), or `techniques` "
            "as a TechniqueSpec config dict."
        )
    techniques, units = upgrade_config({**(techniques or {}), **flat}, "spec")
    config["techniques"] = techniques
    return config, units


def check_no_old_arguments(owner, kwargs):
    """Raises a `ValueError` for an old flat technique option among a
    constructor's `kwargs`: constructors take only today's arguments.

    Args:
        owner: the class being constructed (named in the message).
        kwargs: its `**kwargs`.
    """
    old = [name for name in FLAT_TECHNIQUE_OPTIONS if name in kwargs]
    if old:
        fields = ", ".join(f"{name}={kwargs[name]!r}" for name in old)
        raise ValueError(
            f"Invalid argument `{old[0]}` for {owner.__name__}: the technique options are one argument, "
            f"`techniques` (since 2026-12-02). Pass `techniques=TechniqueSpec({fields})` or the names "
            "(`techniques=('spt', 'lsa', 'sata', 'cb')`). Saved files with the old options still load."
        )


def check_no_scale_multiplier(owner, kwargs):
    """Raises a `ValueError` for SATA's old `scale_lr_multiplier` among `kwargs`."""
    if SCALE_LR_MULTIPLIER in kwargs:
        raise ValueError(
            f"Invalid argument `{SCALE_LR_MULTIPLIER}` for {owner.__name__}: the learning rate of SATA's "
            "scale belongs to the optimizer (since 2026-12-01): "
            "`MultiRateAdamW(learning_rate_multipliers={'sata_scale': sata_lr / lr})`. Saved files with "
            "it still load."
        )


def upgrade_train_config(values):
    """Today's form of the values of an old `TrainConfig` file (a new dict)."""
    values = dict(values)
    overrides = values.get("model_overrides")
    if isinstance(overrides, dict) and "suppression" in overrides:
        suppression, _ = _without_multiplier(overrides["suppression"])
        values["model_overrides"] = {**overrides, "suppression": suppression}
    return values


# === The stored-scale hook (SATA's `c`: weights, not config) ===


def mark_stored_scale_units(layer, units):
    """Records SATA's old multiplier `c` on a loaded `layer` (a model or a
    layer); when its weights load, every SATA layer inside reads `s = c * u`."""
    object.__setattr__(layer, _UNITS, units)


def _pass_scale_units_down(layer):
    units = layer.__dict__.pop(_UNITS, None)
    if units is None:
        return
    from keras_smallvit.utils.layers import all_sublayers

    for sublayer in all_sublayers(layer):
        # SATA's layers, by their scale variable (importing the class here
        # would be an import cycle: it imports this module).
        if hasattr(sublayer, SCALE_VARIABLE):
            object.__setattr__(sublayer, _UNITS, units)


def pop_stored_scale_units(layer):
    """The multiplier `c` of the weights a SATA layer is loading (1.0 for
    today's files, which store `s`); forgotten once read."""
    units = layer.__dict__.pop(_UNITS, None)
    return 1.0 if units is None else units


def loads_old_configs(kind):
    """Class decorator: `from_config` passes the config through
    `upgrade_config(config, kind)` first, and `load_own_variables` (Keras
    layers and models) hands SATA's stored-scale multiplier of an old file
    down to the SATA layers before they load. Subclasses inherit both.

    Args:
        kind: one of `CONFIG_KINDS`.
    """
    if kind not in CONFIG_KINDS:
        raise ValueError(f"Invalid `kind`: {kind!r}. Allowed values: {', '.join(map(repr, CONFIG_KINDS))}.")

    def decorate(cls):
        from_config = cls.from_config.__func__

        @functools.wraps(from_config)
        def upgraded_from_config(klass, config):
            config, units = upgrade_config(config, kind)
            instance = from_config(klass, config)
            if units is not None and units != 1.0 and kind != "spec":
                mark_stored_scale_units(instance, units)
            return instance

        cls.from_config = classmethod(upgraded_from_config)
        load_own_variables = getattr(cls, "load_own_variables", None)
        if load_own_variables is not None:

            @functools.wraps(load_own_variables)
            def upgraded_load_own_variables(self, store):
                _pass_scale_units_down(self)
                return load_own_variables(self, store)

            cls.load_own_variables = upgraded_load_own_variables
        return cls

    return decorate
