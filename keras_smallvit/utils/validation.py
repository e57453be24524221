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
