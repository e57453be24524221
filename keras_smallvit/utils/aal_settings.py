"""The settings of AAL, Keras-free: the link modes, the teacher-layer
choices and the lambda decay schedule's parser. The training config checks
them before Keras is imported (the command line's preflight);
`keras_smallvit.aal` re-exports them and its layers give the same messages."""

import numbers

from keras_smallvit.utils.validation import check_choice

LINK_MODES = ("full", "alpha", "beta")
TEACHER_LAYER_CHOICES = ("block_normalization", "normalization", "after_normalization")

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


def check_aal_settings(links, decay, link_lambda, teacher_layers):
    """Raises a `ValueError` naming the `TrainConfig` field (`aal_links`,
    `aal_decay`, `aal_lambda`, `aal_teacher_layers`) unless `links` is one of
    `LINK_MODES`, `decay` a schedule `parse_link_decay` reads, `link_lambda`
    a number `>= 0` and `teacher_layers` one of `TEACHER_LAYER_CHOICES` or
    comma-separated layer names."""
    check_choice("aal_links", links, LINK_MODES)
    try:
        parse_link_decay(decay)
    except ValueError as error:
        raise ValueError(str(error).replace("`decay`", "`aal_decay`")) from None
    if isinstance(link_lambda, bool) or not isinstance(link_lambda, (int, float)) or link_lambda < 0:
        raise ValueError(f"Invalid `aal_lambda` {link_lambda!r}: must be a number >= 0.")
    if isinstance(teacher_layers, str) and teacher_layers not in TEACHER_LAYER_CHOICES:
        if not [name for name in teacher_layers.split(",") if name.strip()]:
            raise ValueError(
                f"Invalid `aal_teacher_layers` {teacher_layers!r}. Allowed values: "
                f"{', '.join(TEACHER_LAYER_CHOICES)} or comma-separated layer names."
            )
