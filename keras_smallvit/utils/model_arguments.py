"""The keyword arguments a model constructor takes: read from its signature
(`constructor_arguments`) and checked (`check_model_kwargs`). Standard
library only: the registry, the backbones and the CNNs share it, and none
of them imports another for it."""

import inspect

# The `keras.Model` keyword arguments a functional model of this package
# forwards (what its `get_config()` holds besides its own arguments).
KERAS_MODEL_ARGUMENTS = ("name", "trainable")


def constructor_arguments(*constructors, exclude=()):
    """Sorted names of the keyword arguments of `constructors` (classes or
    functions, read with `inspect.signature`), without `*args`/`**kwargs`
    and the names in `exclude`.

    Args:
        *constructors: callables whose named parameters are allowed.
        exclude: names the builder sets itself (e.g. `"image_size"`).
    """
    names = set()
    for constructor in constructors:
        for parameter in inspect.signature(constructor).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.name not in exclude and parameter.name != "self":
                names.add(parameter.name)
    return tuple(sorted(names))


def check_model_kwargs(model_class, kwargs):
    """Raises a `ValueError` for a keyword argument `model_class` does not
    take: a functional `keras.Model` drops unknown ones silently, so a
    misspelt `depthh=2` would build the default model.

    Args:
        model_class: the class being constructed (its signature lists the
            allowed arguments).
        kwargs: the `**kwargs` its `__init__` received.
    """
    unknown = [k for k in kwargs if k not in KERAS_MODEL_ARGUMENTS]
    if unknown:
        allowed = sorted({*constructor_arguments(model_class), *KERAS_MODEL_ARGUMENTS})
        raise ValueError(
            f"Invalid argument `{unknown[0]}` for {model_class.__name__}. Allowed: {', '.join(allowed)}."
        )
