"""NumPy references for AAL, written from the paper's formulas (float64)."""

import numpy as np


def normalize_maps(maps, epsilon=1e-6):
    """Every (b, :, :, c) map divided by max(its L2 norm, epsilon)."""
    norm = np.sqrt((maps.astype("float64") ** 2).sum(axis=(1, 2), keepdims=True))
    return maps / np.maximum(norm, epsilon)


def link_loss(augmented, teacher, spatial_reduction="mean", epsilon=1e-6):
    """L_att = mean over (b, c) of reduce_(h,w) (A+/||A+|| - B/||B||)^2."""
    squared = (normalize_maps(augmented, epsilon) - normalize_maps(teacher, epsilon)) ** 2
    per_map = squared.mean(axis=(1, 2)) if spatial_reduction == "mean" else squared.sum(axis=(1, 2))
    return per_map.mean()


def link_head(maps, kernel, bias, mask=None):
    """A+_c = sum_i w_ic A_i + b_c (Eq. 4), with masked links removed."""
    weights = kernel if mask is None else kernel * mask
    return np.einsum("bhwi,ic->bhwc", maps.astype("float64"), weights) + bias


def keys_cubic(x, a):
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_resize(image, size, a=-0.75):
    """Direct 2-D bicubic resize of an (h, w) image, one output pixel at a
    time: half-pixel centres, the 4x4 taps around the source point, indices
    clamped at the borders (the textbook algorithm; no separability used)."""
    h, w = image.shape
    out = np.zeros(size)
    for i in range(size[0]):
        for j in range(size[1]):
            sy = (i + 0.5) * h / size[0] - 0.5
            sx = (j + 0.5) * w / size[1] - 0.5
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            total = 0.0
            for dy in range(-1, 3):
                for dx in range(-1, 3):
                    weight = keys_cubic(sy - (y0 + dy), a) * keys_cubic(sx - (x0 + dx), a)
                    total += weight * image[min(max(y0 + dy, 0), h - 1), min(max(x0 + dx, 0), w - 1)]
            out[i, j] = total
    return out
