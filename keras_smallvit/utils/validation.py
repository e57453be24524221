"""Argument checks that raise `ValueError`s naming the argument and what it allows."""

import numbers


def check_choice(name, value, allowed):
    """Returns `value` if it is one of `allowed`, else raises a `ValueError`."""
    if value not in allowed:
        raise ValueError(
            f"Invalid `{name}`: {value!r}. Allowed values: "
            f"{', '.join(repr(a) for a in allowed)}."
        )
    return value


def check_positive_int(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < 1
    ):
        raise ValueError(
            f"Invalid `{name}`: {value!r}. Expected a positive integer (>= 1)."
        )
    return int(value)


def check_range(name, value, low, high, low_inclusive=True, high_inclusive=True):
    """Checks that `low <(=) value <(=) high`; `None` bounds are open."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        right = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        raise ValueError(
            f"Invalid `{name}`: {value!r}. Expected a number in {left}, {right}."
        )
    return float(value)


def check_divisible(name, value, divisor_name, divisor):
    if value % divisor:
        raise ValueError(
            f"Invalid `{name}`: {value} is not divisible by `{divisor_name}` "
            f"({divisor}). Allowed values are multiples of {divisor}."
        )
    return value


def as_pair(name, value):
    """Turns an int or a pair of ints into a validated `(height, width)` tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"Invalid `{name}`: {value!r}. Expected an int or a pair of ints."
            )
        return tuple(check_positive_int(name, v) for v in value)
    v = check_positive_int(name, value)
    return (v, v)


def check_input_shape(layer, input_shape, axes, known=(), argument="inputs"):
    """Checks a layer's input shape at `build` (or `call`): its rank is
    `len(axes)` and the axes at the indices `known` have a static size.

    Args:
        layer: the layer (its class names it in the error).
        input_shape: the shape given.
        axes: the names of the expected axes, e.g. `("batch", "tokens", "dim")`.
        known: indices of the axes whose size must be static.
        argument: the call argument the shape belongs to.

    Returns:
        The shape as a tuple.
    """
    shape = tuple(input_shape)
    expected = f"({', '.join(axes)})"
    if len(shape) != len(axes):
        raise ValueError(
            f"Invalid `{argument}` for {type(layer).__name__}: expected a rank-{len(axes)} tensor of shape "
            f"{expected}; got shape {shape} (rank {len(shape)})."
        )
    for index in known:
        if shape[index] is None:
            raise ValueError(
                f"Invalid `{argument}` for {type(layer).__name__}: the {axes[index]} axis of its shape "
                f"{expected} must have a static size; got shape {shape}."
            )
    return shape


def check_axis_size(layer, shape, index, axis, built_size, argument="inputs"):
    """Checks at `call` that axis `index` (named `axis`) of `shape` has the
    size `built_size` the layer was built for (a static size; an unknown one
    passes)."""
    size = shape[index]
    if size is not None and size != built_size:
        raise ValueError(
            f"Invalid `{argument}` for {type(layer).__name__}: it was built for {axis} = {built_size}; "
            f"got {axis} = {size} (shape {tuple(shape)}). Allowed: {axis} = {built_size}."
        )
