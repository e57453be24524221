"""Walking a model's layers with public attributes only."""

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
