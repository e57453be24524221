"""Bicubic resizing of feature and attention maps, the same on every backend.

Written by hand: `keras.ops.image.resize(..., "bicubic")` gives different
numbers per backend (torch uses the cubic coefficient -0.75, TensorFlow and
JAX -0.5, and JAX renormalises at the borders where TensorFlow clamps).
Bicubic resizing is separable and linear, so here it is two fixed
interpolation matrices built once in NumPy and applied as matmuls (cheap,
and XLA compiles them on every backend).
"""

import functools
import math

import numpy as np
from keras import ops

# PyTorch's `F.interpolate(mode="bicubic")`: the paper's framework (its code
# is not public, its DeiT baseline is PyTorch). TensorFlow/JAX/PIL use -0.5.
DEFAULT_CUBIC_COEFFICIENT = -0.75


def _cubic(x, a):
    """Keys' cubic convolution kernel with coefficient `a`."""
    x = abs(x)
    if x <= 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return 0.0


@functools.lru_cache(maxsize=64)
def _cached_matrix(in_size, out_size, coefficient, antialias):
    matrix = cubic_resize_matrix(in_size, out_size, coefficient, antialias)
    matrix.flags.writeable = False
    return matrix


def cubic_resize_matrix(in_size, out_size, coefficient=DEFAULT_CUBIC_COEFFICIENT, antialias=False):
    """The `(out_size, in_size)` matrix of 1-D bicubic resizing.

    Half-pixel centres (`align_corners=False`). Without `antialias`, the 4
    taps around each source position, indices clamped at the borders: with
    `coefficient=-0.75` this is PyTorch's `F.interpolate(mode="bicubic")`.
    With `antialias`, the kernel is stretched by the downscaling factor and
    truncated and renormalised at the borders: with `coefficient=-0.5` this
    is PIL's, TensorFlow's and PyTorch's antialiased bicubic.

    Args:
        in_size: source length.
        out_size: target length.
        coefficient: the cubic coefficient `a` (-0.75 PyTorch, -0.5 TF/JAX/PIL).
        antialias: low-pass filter when downsampling.
    """
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        if antialias:
            support = 2.0 * max(scale, 1.0)
            inv_scale = 1.0 / max(scale, 1.0)
            center = scale * (i + 0.5)
            low = max(int(center - support + 0.5), 0)
            high = min(int(center + support + 0.5), in_size)
            weights = [_cubic((j - center + 0.5) * inv_scale, coefficient) for j in range(low, high)]
            total = sum(weights)
            for j, w in zip(range(low, high), weights):
                matrix[i, j] += w / total
        else:
            source = scale * (i + 0.5) - 0.5
            base = math.floor(source)
            t = source - base
            for k in range(-1, 3):
                index = min(max(base + k, 0), in_size - 1)
                matrix[i, index] += _cubic(k - t, coefficient)
    return matrix


def resize_maps(maps, size, coefficient=DEFAULT_CUBIC_COEFFICIENT, antialias=False):
    """Bicubic resize of channels-last maps `(B, h, w, C)` to `size`.

    Args:
        maps: a `(B, h, w, C)` tensor with static `h, w`.
        size: `(height, width)` of the result.
        coefficient: the cubic coefficient (see `cubic_resize_matrix`).
        antialias: low-pass filter when downsampling.

    Returns:
        `(B, height, width, C)` in the dtype of `maps`.
    """
    height, width = maps.shape[1], maps.shape[2]
    if (height, width) == tuple(size) and not antialias:
        return maps  # the matrices are the identity
    rows = ops.convert_to_tensor(_cached_matrix(height, size[0], coefficient, bool(antialias)), maps.dtype)
    cols = ops.convert_to_tensor(_cached_matrix(width, size[1], coefficient, bool(antialias)), maps.dtype)
    maps = ops.einsum("yh,bhwc->bywc", rows, maps)
    return ops.einsum("xw,bywc->byxc", cols, maps)
