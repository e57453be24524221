"""The per-epoch decay of the attention-link weight lambda."""

import math
import numbers

import keras

from keras_smallvit.utils.aal_settings import DEFAULT_LINK_DECAY
from keras_smallvit.utils.aal_settings import DEFAULT_LINK_LAMBDA
from keras_smallvit.utils.aal_settings import parse_link_decay


def link_lambda_at(epoch, initial=DEFAULT_LINK_LAMBDA, decay=DEFAULT_LINK_DECAY, epochs=300):
    """Lambda during `epoch` (0-based): `initial` times the factors of the
    epochs before it. A segment ending at fraction `u` covers the epochs
    `k < floor(u * epochs + 0.5)` (`u * epochs` rounded half up)."""
    pairs = parse_link_decay(decay)
    ends = [math.floor(until * epochs + 0.5) for _, until in pairs]
    value = float(initial)
    for k in range(epoch):
        value *= next((f for (f, _), end in zip(pairs, ends) if k < end), pairs[-1][0])
    return value


class LinkLambdaScheduler(keras.callbacks.Callback):
    """Sets the distiller's `link_lambda` at the start of every epoch.

    The value is a function of the epoch index (see `link_lambda_at`), so a
    resumed run continues the same schedule.

    Args:
        initial: lambda in the first epoch (paper: 2000).
        decay: the decay schedule (see `parse_link_decay`; paper: 0.99 for
            the first 2/3 of the epochs, then 0.98).
        epochs: the run's length for the schedule's fractions; None takes
            `epochs` of `fit`.
    """

    def __init__(self, initial=DEFAULT_LINK_LAMBDA, decay=DEFAULT_LINK_DECAY, epochs=None):
        super().__init__()
        if not isinstance(initial, numbers.Real) or isinstance(initial, bool) or initial < 0:
            raise ValueError(f"Invalid `initial`: {initial!r}. Expected a number >= 0.")
        self.initial = float(initial)
        self.decay = decay
        parse_link_decay(decay)
        if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
            raise ValueError(f"Invalid `epochs`: {epochs!r}. Expected a positive integer or None.")
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.epochs or self.params.get("epochs") or 1
        if not hasattr(self.model, "link_lambda"):
            raise ValueError(
                "LinkLambdaScheduler needs a model with a `link_lambda` variable "
                "(an AttentionLinkDistiller)."
            )
        self.model.link_lambda.assign(link_lambda_at(epoch, self.initial, self.decay, epochs))
