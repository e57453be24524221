"""The CNN teacher of AAL: loading it (a file, a run folder, ImageNet
weights), and choosing its feature maps and their blocks (CNN levels) in any
Keras CNN."""

import collections
import os
import re

import keras

from keras_smallvit.models.cnn.cnn_common import check_weights_path
from keras_smallvit.models.cnn.cnn_common import load_weights_file
from keras_smallvit.utils.aal_settings import TEACHER_LAYER_CHOICES

# The checkpoint of a run folder a teacher is read from.
RUN_FOLDER_TEACHER = "last.keras"
NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
)
# A block number in a layer name: "stage2_block1_bn1" (this package's
# ResNets), "block3a_project_bn" (Keras EfficientNets), "conv4_block2_1_bn"
# (Keras ResNets), "stage_1" ... but not Keras' default "conv2d_3".
_BLOCK_NUMBER = re.compile(r"(?:^|_)(stage|block|conv|layer)_?(\d+)(?!\d)(?!d(?:_|$))")

TeacherLayers = collections.namedtuple("TeacherLayers", ["names", "blocks", "block_names"])
TeacherLayers.__doc__ = """The chosen teacher layers.

Attributes:
    names: layer names, in graph order.
    blocks: the block index (0 = shallowest) of every layer.
    block_names: a label per block (e.g. "stage1", "block3").
"""


def block_label(name):
    """`(number, label)` of the block a layer name is in, or None."""
    match = _BLOCK_NUMBER.search(name)
    return None if match is None else (int(match.group(2)), match.group(1) + match.group(2))


def _single_output(layer):
    """The layer's output tensor if it is a 4-D map of a once-called layer."""
    try:
        output = layer.output
    except (AttributeError, ValueError):  # unused or shared layers
        return None
    return output if hasattr(output, "shape") and len(output.shape) == 4 else None


def _normalization_layers(teacher):
    return [
        layer
        for layer in teacher.layers
        if isinstance(layer, NORMALIZATION_LAYERS) and _single_output(layer) is not None
    ]


def _activation_after(teacher, tensor):
    """The activation layer that is the only consumer of `tensor`, or None."""
    consumers = []
    for layer in teacher.layers:
        try:
            inputs = layer.input
        except (AttributeError, ValueError):
            continue
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if any(x is tensor for x in inputs):
            consumers.append((layer, len(inputs)))
    if len(consumers) == 1 and consumers[0][1] == 1 and isinstance(consumers[0][0], ACTIVATION_LAYERS):
        return consumers[0][0] if _single_output(consumers[0][0]) is not None else None
    return None


def select_teacher_layers(teacher, layers="block_normalization"):
    """Chooses the teacher's feature layers and groups them into blocks.

    Args:
        teacher: a functional Keras CNN (channels-last feature maps); only
            its top-level layers are searched.
        layers: one of
            - `"block_normalization"` (default): the output of the last
              normalisation layer of every block (one map set per CNN
              level, the paper's Table 1 levels; with EfficientNet-B3 and
              DeiT-S this gives 0.069M link parameters, the paper reports
              0.068M). Blocks
              are read from the layer names (`stage<k>`, `block<k>`,
              `conv<k>`, `layer<k>`); layers outside blocks (stem, top)
              are not used.
            - `"normalization"`: every normalisation layer's output
              (BatchNormalization, LayerNormalization, GroupNormalization).
            - `"after_normalization"`: for every normalisation layer, the
              output of the activation layer right after it when that is its
              only consumer, else the normalisation output.
            - a list of layer names (blocks from the names, or one block per
              layer when the names have no block numbers), or a list of
              lists of names (one inner list per block, shallow to deep).

    Returns:
        A `TeacherLayers(names, blocks, block_names)`.
    """
    known = {layer.name: layer for layer in teacher.layers}
    if isinstance(layers, str):
        if layers not in TEACHER_LAYER_CHOICES:
            raise ValueError(
                f"Invalid `teacher_layers`: {layers!r}. Allowed values: "
                f"{', '.join(repr(c) for c in TEACHER_LAYER_CHOICES)}, or a list of layer names."
            )
        normalization = _normalization_layers(teacher)
        if not normalization:
            raise ValueError(
                f"Invalid `teacher_layers`: {layers!r} found no normalisation layer with 4-D outputs "
                f"in the teacher {teacher.name!r}. Allowed values: a list of its layer names."
            )
        if layers == "block_normalization":
            last = {}
            for layer in normalization:
                label = block_label(layer.name)
                if label is not None:
                    last[label[0]] = (layer.name, label[1])
            if not last:
                raise ValueError(
                    f"Invalid `teacher_layers`: 'block_normalization' needs block numbers in the layer "
                    f"names of {teacher.name!r} (e.g. 'stage2_...', 'block3a_...'). Allowed values: "
                    "'normalization', 'after_normalization', or a list of layer names."
                )
            numbers = sorted(last)
            return TeacherLayers(
                tuple(last[n][0] for n in numbers), tuple(range(len(numbers))), tuple(last[n][1] for n in numbers)
            )
        names = [layer.name for layer in normalization]
        if layers == "after_normalization":
            names = [
                (_activation_after(teacher, layer.output) or layer).name for layer in normalization
            ]
        groups = None
    else:
        layers = list(layers)
        if layers and all(isinstance(group, (list, tuple)) for group in layers):
            groups = [list(group) for group in layers]
            names = [name for group in groups for name in group]
        else:
            groups, names = None, layers
        if not names:
            raise ValueError("Invalid `teacher_layers`: an empty list. Expected at least one layer name.")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"Invalid `teacher_layers`: {unknown} are not layers of the teacher {teacher.name!r}. "
                f"Allowed values: its layer names, or {', '.join(repr(c) for c in TEACHER_LAYER_CHOICES)}."
            )
        not_maps = [n for n in names if _single_output(known[n]) is None]
        if not_maps:
            raise ValueError(
                f"Invalid `teacher_layers`: {not_maps} do not output one 4-D (B, h, w, C) feature map."
            )
    if groups is not None:
        blocks = [b for b, group in enumerate(groups) for _ in group]
        return TeacherLayers(tuple(names), tuple(blocks), tuple(group[0] for group in groups))
    return TeacherLayers(tuple(names), *_blocks_from_names(names))


def _blocks_from_names(names):
    """Block index and labels of layers from their names; unnumbered layers
    (stem, top) join the nearest numbered block; without numbers, one block
    per layer."""
    labels = [block_label(name) for name in names]
    if all(label is None for label in labels):
        return tuple(range(len(names))), tuple(names)
    # Fill the gaps: forward from the previous numbered layer, then backward
    # for leading unnumbered layers (a stem joins the first block).
    filled, previous = [], None
    for label in labels:
        previous = label if label is not None else previous
        filled.append(previous)
    following = next(label for label in labels if label is not None)
    filled = [label if label is not None else following for label in filled]
    numbers = sorted({label[0] for label in filled})
    index = {number: i for i, number in enumerate(numbers)}
    names_of = {label[0]: label[1] for label in filled}
    return tuple(index[label[0]] for label in filled), tuple(names_of[n] for n in numbers)


def teacher_file(path):
    """The teacher file `path` names: `"imagenet"` as is, a run folder's
    `last.keras` (a folder of `training.train`), else `path`."""
    if isinstance(path, str) and path.lower() == "imagenet":
        return "imagenet"
    if path is not None and os.path.isdir(path):
        last = os.path.join(path, RUN_FOLDER_TEACHER)
        if not os.path.isfile(last):
            raise FileNotFoundError(
                f"Invalid teacher {os.fspath(path)!r}: a folder, but no {RUN_FOLDER_TEACHER} in it. Allowed values: "
                "a run folder of training.train (its last.keras), a .keras or .weights.h5 file, or 'imagenet'."
            )
        return last
    return path


def load_teacher(path, model=None):
    """A teacher from a local Keras file, a run folder, or ImageNet weights.

    Args:
        path: a `.keras` file (`model.save(...)`: architecture and weights),
            a run folder of `training.train` (its `last.keras`), a
            `.weights.h5` file (`model.save_weights(...)`), which needs
            `model`, or `"imagenet"` with `model` (an EfficientNet: Keras'
            ImageNet file, from Keras' cache, downloaded there once if
            absent; see `load_weights_file`).
        model: with a `.weights.h5` file or `"imagenet"`, the model to load
            the weights into.

    Returns:
        The teacher model (not yet frozen: the distiller freezes it).
    """
    path = teacher_file(path)
    path = check_weights_path(path, None if model is None else type(model))
    if path is None:
        raise ValueError(
            "Invalid `path`: None. Expected a .keras or .weights.h5 file of the teacher, a run folder, or 'imagenet'."
        )
    if path.endswith(".keras"):
        return keras.saving.load_model(path, compile=False)
    if model is None:
        raise ValueError(
            f"Invalid `model`: None for the teacher weights {path!r}. Weights hold no architecture: pass a "
            "model of the same architecture (the CLI: --teacher-model NAME)."
        )
    return load_weights_file(model, path)
