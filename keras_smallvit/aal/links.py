"""Which ViT layers link to which teacher blocks: full, alpha and beta links
(the AAL paper's Table 1) generalised by relative depth, and the link
magnitudes of a trained head (the paper's Figure 2)."""

from fractions import Fraction

import numpy as np

from keras_smallvit.utils.aal_settings import LINK_MODES

# Paper Table 1 (EfficientNet-B3 blocks 1..7 x DeiT-S layers 1..12): for each
# teacher block, the inclusive range of ViT layers it links to.
PAPER_TEACHER_BLOCKS = 7
PAPER_VIT_LAYERS = 12
PAPER_LINK_RANGES = {
    "alpha": ((1, 3), (1, 5), (3, 5), (4, 6), (4, 6), (6, 11), (7, 12)),
    "beta": ((1, 2), (1, 5), (3, 5), (4, 6), (4, 7), (6, 10), (7, 10)),
}


def _overlaps(start_a, end_a, start_b, end_b):
    """Whether two intervals share more than an end point (exact fractions)."""
    return min(end_a, end_b) - max(start_a, start_b) > 0


def link_matrix(links, num_blocks, num_layers):
    """The `(num_blocks, num_layers)` 0/1 matrix of allowed links.

    Depths are relative: teacher block `b` of `B` covers `[b/B, (b+1)/B]` of
    the teacher, ViT layer `n` of `N` covers `[n/N, (n+1)/N]` of the ViT.
    A block links to the ViT depth range of every Table 1 row whose teacher
    depth overlaps its own, and a ViT layer is linked when its depth overlaps
    that range. With 7 blocks and 12 layers this is Table 1 exactly; for any
    other depths every block keeps at least one link.

    Args:
        links: `"full"`, `"alpha"`, `"beta"`, or a `(num_blocks, num_layers)`
            array-like of 0/1 (used as given).
        num_blocks: teacher blocks (CNN levels).
        num_layers: ViT layers with class-token attention.

    Returns:
        An int32 NumPy array `(num_blocks, num_layers)`.
    """
    for name, value in (("num_blocks", num_blocks), ("num_layers", num_layers)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"Invalid `{name}`: {value!r}. Expected a positive integer (>= 1).")
    if not isinstance(links, str):
        matrix = np.asarray(links)
        if matrix.shape != (num_blocks, num_layers) or not np.isin(matrix, (0, 1)).all():
            raise ValueError(
                f"Invalid `links`: an array of shape {matrix.shape}. Allowed values: "
                f"{', '.join(repr(m) for m in LINK_MODES)}, or a 0/1 array of shape "
                f"(teacher blocks, ViT layers) = ({num_blocks}, {num_layers})."
            )
        return matrix.astype("int32")
    if links not in LINK_MODES:
        raise ValueError(
            f"Invalid `links`: {links!r}. Allowed values: {', '.join(repr(m) for m in LINK_MODES)}, "
            "or a 0/1 array of shape (teacher blocks, ViT layers)."
        )
    if links == "full":
        return np.ones((num_blocks, num_layers), dtype="int32")
    rows = PAPER_LINK_RANGES[links]
    matrix = np.zeros((num_blocks, num_layers), dtype="int32")
    for b in range(num_blocks):
        block = (Fraction(b, num_blocks), Fraction(b + 1, num_blocks))
        ranges = [
            (Fraction(low - 1, PAPER_VIT_LAYERS), Fraction(high, PAPER_VIT_LAYERS))
            for k, (low, high) in enumerate(rows)
            if _overlaps(*block, Fraction(k, PAPER_TEACHER_BLOCKS), Fraction(k + 1, PAPER_TEACHER_BLOCKS))
        ]
        for n in range(num_layers):
            layer = (Fraction(n, num_layers), Fraction(n + 1, num_layers))
            matrix[b, n] = any(_overlaps(*layer, *vit_range) for vit_range in ranges)
    return matrix


def link_magnitudes(kernel, input_groups, output_groups):
    """Mean `|w|` of the links between every teacher block and ViT layer.

    Args:
        kernel: the head's `(num_inputs, num_maps)` link weights.
        input_groups: the ViT layer of every input map.
        output_groups: the teacher block of every output map.

    Returns:
        A float NumPy array `(num_blocks, num_layers)` (the paper's Figure 2:
        rows are teacher blocks, columns ViT layers). Masked links count as 0.
    """
    magnitude = np.abs(np.asarray(kernel, dtype="float64"))
    input_groups, output_groups = np.asarray(input_groups), np.asarray(output_groups)
    num_layers, num_blocks = input_groups.max() + 1, output_groups.max() + 1
    result = np.zeros((num_blocks, num_layers))
    for b in range(num_blocks):
        for n in range(num_layers):
            result[b, n] = magnitude[np.ix_(input_groups == n, output_groups == b)].mean()
    return result
