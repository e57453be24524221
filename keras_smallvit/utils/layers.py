"""Keras model helpers: walking a model's layers with public attributes
only, and a functional model's own dtype policy."""

import keras


def all_sublayers(layer):
    """`layer` and every layer it is made of, each once.

    Found through `Model.layers` and the layers' attributes (and lists, tuples
    or dicts of layers), as Keras tracks them; Keras' own recursive walk is
    private.
    """
    found, stack = {}, [layer]
    while stack:
        current = stack.pop()
        if id(current) in found:
            continue
        found[id(current)] = current
        children = list(current.layers) if isinstance(current, keras.Model) else []
        for value in vars(current).values():
            if isinstance(value, dict):
                children.extend(value.values())
            elif isinstance(value, (list, tuple)):
                children.extend(value)
            else:
                children.append(value)
        stack.extend(child for child in children if isinstance(child, keras.layers.Layer))
    return list(found.values())


def keep_dtype_policy(model, dtype):
    """Sets a functional model's own `dtype_policy` to `dtype` (when given).

    `keras.Model(inputs, outputs, dtype=...)` drops `dtype`: the model's
    policy stays float32 while its layers are mixed, so a config written from
    `model.dtype_policy` would reload a mixed-precision model as float32.
    """
    if dtype is not None:
        model.dtype_policy = dtype
