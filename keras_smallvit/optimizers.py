"""Optimizers of the library: `MultiRateAdamW` (AdamW with per-variable
learning-rate multipliers, for SATA's own rate).

A module of its own, imported by `keras_smallvit`, so that a compiled
`.keras` file (a run's `last.keras`) loads after `import keras_smallvit`.
Written by hand: Keras' AdamW has one rate for every variable.
"""

import numbers
import re
import warnings

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_smallvit")
class MultiRateAdamW(keras.optimizers.Adam):
    """AdamW in which chosen variables have their own learning rate.

    A variable whose `name` is a key of `learning_rate_multipliers` is
    trained at `multiplier * learning_rate(t)` (the same schedule, scaled),
    and its decoupled weight decay acts at that rate too: per step, for every
    trainable variable `p` with `lr_p = multiplier * lr(t)` (multiplier 1
    for the others), `p <- p - p * weight_decay * lr_p`, then the Adam step
    with `lr_p`. This is the official SATA recipe, a second AdamW for the
    SATA scales with `lr = sata_lr` (same weight decay and schedule shape):
    `learning_rate_multipliers={"sata_scale": sata_lr / lr}`. Without
    multipliers it is `keras.optimizers.AdamW` (weight decay on every
    variable, as the official code decays all parameters).

    The decay is part of `update_step`; the base class gets
    `weight_decay=None`, so `optimizer.weight_decay` is None and the rate is
    `decoupled_weight_decay` (`exclude_from_weight_decay` is not supported).

    Args:
        learning_rate: float or `LearningRateSchedule`, the model's rate.
        weight_decay: decoupled weight decay coefficient, `>= 0`.
        learning_rate_multipliers: dict `{variable name: multiplier > 0}`
            (names as in `variable.name`, e.g. `"sata_scale"`), or None.
        **kwargs: the other `keras.optimizers.Adam` arguments (`beta_1`,
            `beta_2`, `epsilon`, `clipnorm`, ...).
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.05, learning_rate_multipliers=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        if weight_decay is None:
            weight_decay = 0.0
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real) or weight_decay < 0:
            raise ValueError(f"Invalid `weight_decay`: {weight_decay!r}. Expected a number >= 0.")
        self.decoupled_weight_decay = float(weight_decay)
        self.learning_rate_multipliers = _check_multipliers(learning_rate_multipliers)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        names = {_short_name(v) for v in var_list}
        missing = sorted(set(self.learning_rate_multipliers) - names)
        if missing:
            warnings.warn(
                f"`learning_rate_multipliers` names {missing}, which no trained variable "
                "has: those multipliers have no effect.",
                stacklevel=2,
            )

    def multiplier_for(self, variable):
        """The learning-rate multiplier of `variable` (1.0 unless named in
        `learning_rate_multipliers`)."""
        return self.learning_rate_multipliers.get(_short_name(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        multiplier = self.multiplier_for(variable)
        if multiplier != 1.0:
            lr = lr * ops.cast(multiplier, variable.dtype)
        if self.decoupled_weight_decay:
            # As keras.optimizers.AdamW (same expression), at this variable's rate.
            wd = ops.cast(self.decoupled_weight_decay, variable.dtype)
            self.assign(variable, variable - variable * wd * lr)
        super().update_step(gradient, variable, lr)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        raise NotImplementedError(
            "MultiRateAdamW decays every trained variable (as the papers' official code)."
        )

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.decoupled_weight_decay
        config["learning_rate_multipliers"] = dict(self.learning_rate_multipliers)
        return config


def _short_name(variable):
    """The Keras `variable.name` (which contains no `/`). In `update_step` on
    TensorFlow the variable is the backing `tf.Variable`, named
    `scope/name:0`, or under `MirroredStrategy` `scope/name/replica_1:0` for
    the copies past the first device."""
    return re.sub(r"(/replica_\d+)?/?:\d+$", "", variable.name).rsplit("/", 1)[-1]


def _check_multipliers(multipliers):
    if multipliers is None:
        return {}
    if not isinstance(multipliers, dict):
        raise ValueError(
            f"Invalid `learning_rate_multipliers`: {multipliers!r}. Expected a dict "
            "{variable name: multiplier > 0} or None."
        )
    checked = {}
    for name, value in multipliers.items():
        if (
            not isinstance(name, str)
            or isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not value > 0
            or value == float("inf")
        ):
            raise ValueError(
                f"Invalid `learning_rate_multipliers` entry {name!r}: {value!r}. Expected "
                "a variable name (str) and a finite number > 0."
            )
        checked[name] = float(value)
    return checked
