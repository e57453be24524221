"""The per-epoch decay of the attention-link weight lambda."""

import math
import numbers

import keras

# The paper: lambda 2000, x0.99 per epoch for the first 200 of 300 epochs,
# then x0.98. Written relative to the run's length ("until 2/3 of the epochs").
DEFAULT_LINK_LAMBDA = 2000.0
DEFAULT_LINK_DECAY = "0.99@0.6667,0.98"


def parse_link_decay(decay):
    """Parses a lambda decay schedule into `[(factor, until_fraction), ...]`.

    Args:
        decay: a number (one factor for every epoch), a string of
            comma-separated `factor[@until]` segments, e.g.
            `"0.99@0.6667,0.98"` (the paper: 0.99 for the first two thirds of
            the epochs, then 0.98), a sequence of such segments, or a sequence
            of `(factor, until)` pairs. `until` is the fraction of the run's
            epochs (in `(0, 1]`, increasing) at which the segment ends; the
            last segment runs to the end.

    Returns:
        A list of `(factor, until)` pairs, the last with `until = 1.0`.
    """
    allowed = (
        "a factor in (0, 1], or comma-separated 'factor@until' segments with increasing "
        "`until` fractions in (0, 1], e.g. '0.99@0.6667,0.98'"
    )
    if isinstance(decay, numbers.Real) and not isinstance(decay, bool):
        segments = [(decay, None)]
    elif isinstance(decay, str):
        segments = [part.strip() for part in decay.split(",") if part.strip()]
    elif isinstance(decay, (list, tuple)):
        segments = list(decay)
    else:
        raise ValueError(f"Invalid `decay`: {decay!r}. Allowed values: {allowed}.")
    pairs = []
    try:
        for segment in segments:
            if isinstance(segment, str):
                factor, _, until = segment.partition("@")
                segment = (float(factor), float(until) if until else None)
            elif isinstance(segment, numbers.Real):
                segment = (float(segment), None)
            factor, until = segment
            pairs.append((float(factor), None if until is None else float(until)))
    except (TypeError, ValueError):
        raise ValueError(f"Invalid `decay`: {decay!r}. Allowed values: {allowed}.") from None
    if not pairs:
        raise ValueError(f"Invalid `decay`: {decay!r}. Allowed values: {allowed}.")
    if pairs[-1][1] is None:
        pairs[-1] = (pairs[-1][0], 1.0)
    ends = [until for _, until in pairs]
    if (
        any(not 0.0 < factor <= 1.0 for factor, _ in pairs)
        or any(until is None or not 0.0 < until <= 1.0 for until in ends)
        or any(b <= a for a, b in zip(ends, ends[1:]))
        or ends[-1] != 1.0
    ):
        raise ValueError(f"Invalid `decay`: {decay!r}. Allowed values: {allowed}.")
    return pairs


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
