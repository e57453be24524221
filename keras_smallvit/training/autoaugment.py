"""AutoAugment and RandAugment as pure, stateless TensorFlow image ops.

The papers' recipe (SPT/LSA, SATA) augments every training image with one
AutoAugment sub-policy (Cubuk et al., 2019), applied on uint8 PIL images.
This module reproduces those PIL ops in TensorFlow so that they run inside
`tf.data.Dataset.map` on single images, whatever the Keras backend:

    image = auto_augment(image, "cifar10", seed)      # uint8 (H, W, 3)
    image = rand_augment(image, 2, 0.5, seed)

Every op matches Pillow's (13.x) C code pixel for pixel on uint8 images:
the same sampling positions (pixel centres; rotate in Pillow's 16.16 fixed
point; shear with its transform bicubic, a cubic convolution with a = -1),
the same arithmetic (float32 for the enhancement blends, double elsewhere,
as Pillow) and the same truncations. Geometric ops are gathers at integer
indices computed that way, not `ImageProjectiveTransformV3`, whose
rounding differs from Pillow's and which has no bicubic. Each image computes only the ops it
applies (`tf.switch_case` picks one op, `tf.cond` skips an op whose
probability draw fails), unlike Keras' `RandAugment` layer, which computes
every op on every image. All randomness comes from `tf.random.stateless_*`
ops keyed by `seed`: the same seed gives the same image.
"""

import numpy as np
import tensorflow as tf

from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

# These functions are plain TensorFlow (no Python control flow on tensors):
# AutoGraph's conversion of the ~190 functions they call took ~20 s per
# trace (every `Dataset.map` or `tf.function` around them), with nothing to
# convert. `do_not_convert` keeps the trace to the ops themselves.
no_autograph = tf.autograph.experimental.do_not_convert

POLICY_NAMES = ("cifar10", "svhn", "imagenet")
OP_NAMES = (
    "shearX",
    "shearY",
    "translateX",
    "translateY",
    "rotate",
    "color",
    "posterize",
    "solarize",
    "contrast",
    "sharpness",
    "brightness",
    "autocontrast",
    "equalize",
    "invert",
)

# (lo, hi) of each op's magnitude: AutoAugment's level `i` in 0..9 is
# `linspace(lo, hi, 10)[i]`, RandAugment's magnitude `m` in [0, 1] is
# `lo + m * (hi - lo)`. Shear: affine factor; translate: fraction of the
# image side (150/331: the official code's 150 px on 331 px ImageNet
# images); rotate: degrees; the four enhancement ops: `m` of the factor
# `1 + m * sign`; posterize: bits kept (rounded); solarize: threshold.
MAGNITUDE_RANGES = {
    "shearX": (0.0, 0.3),
    "shearY": (0.0, 0.3),
    "translateX": (0.0, 150 / 331),
    "translateY": (0.0, 150 / 331),
    "rotate": (0.0, 30.0),
    "color": (0.0, 0.9),
    "posterize": (8, 4),
    "solarize": (256, 0),
    "contrast": (0.0, 0.9),
    "sharpness": (0.0, 0.9),
    "brightness": (0.0, 0.9),
}
NO_MAGNITUDE_OPS = ("autocontrast", "equalize", "invert")
# Ops whose magnitude gets a random sign; the enhancement ones use it as
# the factor `1 + magnitude * sign`.
SIGNED_OPS = ("shearX", "shearY", "translateX", "translateY", "rotate")
ENHANCE_OPS = ("color", "contrast", "sharpness", "brightness")
NUM_LEVELS = 10

# The three policies of the AutoAugment paper's appendix. A sub-policy is
# (p1, op1, level1, p2, op2, level2); the level of an op without a
# magnitude is ignored.
POLICIES = {
    "cifar10": (
        (0.1, "invert", 7, 0.2, "contrast", 6),
        (0.7, "rotate", 2, 0.3, "translateX", 9),
        (0.8, "sharpness", 1, 0.9, "sharpness", 3),
        (0.5, "shearY", 8, 0.7, "translateY", 9),
        (0.5, "autocontrast", 8, 0.9, "equalize", 2),
        (0.2, "shearY", 7, 0.3, "posterize", 7),
        (0.4, "color", 3, 0.6, "brightness", 7),
        (0.3, "sharpness", 9, 0.7, "brightness", 9),
        (0.6, "equalize", 5, 0.5, "equalize", 1),
        (0.6, "contrast", 7, 0.6, "sharpness", 5),
        (0.7, "color", 7, 0.5, "translateX", 8),
        (0.3, "equalize", 7, 0.4, "autocontrast", 8),
        (0.4, "translateY", 3, 0.2, "sharpness", 6),
        (0.9, "brightness", 6, 0.2, "color", 8),
        (0.5, "solarize", 2, 0.0, "invert", 3),
        (0.2, "equalize", 0, 0.6, "autocontrast", 0),
        (0.2, "equalize", 8, 0.6, "equalize", 4),
        (0.9, "color", 9, 0.6, "equalize", 6),
        (0.8, "autocontrast", 4, 0.2, "solarize", 8),
        (0.1, "brightness", 3, 0.7, "color", 0),
        (0.4, "solarize", 5, 0.9, "autocontrast", 3),
        (0.9, "translateY", 9, 0.7, "translateY", 9),
        (0.9, "autocontrast", 2, 0.8, "solarize", 3),
        (0.8, "equalize", 8, 0.1, "invert", 3),
        (0.7, "translateY", 9, 0.9, "autocontrast", 1),
    ),
    "svhn": (
        (0.9, "shearX", 4, 0.2, "invert", 3),
        (0.9, "shearY", 8, 0.7, "invert", 5),
        (0.6, "equalize", 5, 0.6, "solarize", 6),
        (0.9, "invert", 3, 0.6, "equalize", 3),
        (0.6, "equalize", 1, 0.9, "rotate", 3),
        (0.9, "shearX", 4, 0.8, "autocontrast", 3),
        (0.9, "shearY", 8, 0.4, "invert", 5),
        (0.9, "shearY", 5, 0.2, "solarize", 6),
        (0.9, "invert", 6, 0.8, "autocontrast", 1),
        (0.6, "equalize", 3, 0.9, "rotate", 3),
        (0.9, "shearX", 4, 0.3, "solarize", 3),
        (0.8, "shearY", 8, 0.7, "invert", 4),
        (0.9, "equalize", 5, 0.6, "translateY", 6),
        (0.9, "invert", 4, 0.6, "equalize", 7),
        (0.3, "contrast", 3, 0.8, "rotate", 4),
        (0.8, "invert", 5, 0.0, "translateY", 2),
        (0.7, "shearY", 6, 0.4, "solarize", 8),
        (0.6, "invert", 4, 0.8, "rotate", 4),
        (0.3, "shearY", 7, 0.9, "translateX", 3),
        (0.1, "shearX", 6, 0.6, "invert", 5),
        (0.7, "solarize", 2, 0.6, "translateY", 7),
        (0.8, "shearY", 4, 0.8, "invert", 8),
        (0.7, "shearX", 9, 0.8, "translateY", 3),
        (0.8, "shearY", 5, 0.7, "autocontrast", 3),
        (0.7, "shearX", 2, 0.1, "invert", 5),
    ),
    "imagenet": (
        (0.4, "posterize", 8, 0.6, "rotate", 9),
        (0.6, "solarize", 5, 0.6, "autocontrast", 5),
        (0.8, "equalize", 8, 0.6, "equalize", 3),
        (0.6, "posterize", 7, 0.6, "posterize", 6),
        (0.4, "equalize", 7, 0.2, "solarize", 4),
        (0.4, "equalize", 4, 0.8, "rotate", 8),
        (0.6, "solarize", 3, 0.6, "equalize", 7),
        (0.8, "posterize", 5, 1.0, "equalize", 2),
        (0.2, "rotate", 3, 0.6, "solarize", 8),
        (0.6, "equalize", 8, 0.4, "posterize", 6),
        (0.8, "rotate", 8, 0.4, "color", 0),
        (0.4, "rotate", 9, 0.6, "equalize", 2),
        (0.0, "equalize", 7, 0.8, "equalize", 8),
        (0.6, "invert", 4, 1.0, "equalize", 8),
        (0.6, "color", 4, 1.0, "contrast", 8),
        (0.8, "rotate", 8, 1.0, "color", 2),
        (0.8, "color", 8, 0.8, "solarize", 7),
        (0.4, "sharpness", 7, 0.6, "invert", 8),
        (0.6, "shearX", 5, 1.0, "equalize", 9),
        (0.4, "color", 0, 0.6, "equalize", 3),
        (0.4, "equalize", 7, 0.2, "solarize", 4),
        (0.6, "solarize", 5, 0.6, "autocontrast", 5),
        (0.6, "invert", 4, 1.0, "equalize", 8),
        (0.6, "color", 4, 1.0, "contrast", 8),
        (0.8, "equalize", 8, 0.6, "equalize", 3),
    ),
}

FILL_VALUE = 128  # grey, the recipe's fill for pixels a geometric op uncovers


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _as_image(image):
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"Invalid `image`: expected a uint8 tensor, got dtype {image.dtype.name}.")
    if image.shape.rank is not None and (image.shape.rank != 3 or image.shape[-1] not in (None, 3)):
        raise ValueError(f"Invalid `image`: expected shape (height, width, 3), got {image.shape}.")
    return image


def _size(image):
    """(height, width) as int32 scalars (static where known)."""
    shape = tf.shape(image)
    height = image.shape[0] if image.shape[0] is not None else shape[0]
    width = image.shape[1] if image.shape[1] is not None else shape[1]
    return height, width


def _to_uint8(values):
    """float64 -> uint8 as Pillow's `clip8` and `(UINT8)` casts do: clip to
    [0, 255], then truncate."""
    return tf.cast(tf.math.floor(tf.clip_by_value(values, 0.0, 255.0)), tf.uint8)


def _luminance(image):
    """Pillow's RGB -> L: `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`, which
    is the documented `R * 299/1000 + G * 587/1000 + B * 114/1000` in 16-bit
    fixed point (the rounded 1000-based formula differs on 9,040 colours)."""
    rgb = tf.cast(image, tf.int32)
    weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
    return tf.bitwise.right_shift(weighted, 16)


def _blend(degenerate, image, factor):
    """`Image.blend(degenerate, image, factor)`: Pillow 13 computes
    `deg + factor * (img - deg)` in float32 (the factor rounded to float32),
    then clips and truncates."""
    degenerate = tf.cast(degenerate, tf.float32)
    values = degenerate + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - degenerate)
    return tf.cast(tf.math.floor(tf.clip_by_value(values, 0.0, 255.0)), tf.uint8)


def _fill_where_invalid(valid, sampled):
    return tf.where(valid[..., None], sampled, tf.constant(FILL_VALUE, tf.uint8))


# --------------------------------------------------------------------------
# The 14 ops. Each takes a uint8 (H, W, 3) image and a float64 scalar.
# --------------------------------------------------------------------------


def _centres(size):
    """`[0.5, 1.5, ..., size - 0.5]` in float64."""
    size = tf.cast(size, tf.float64)
    return tf.range(tf.constant(0.5, tf.float64), size, tf.constant(1.0, tf.float64))


def _shear_lines(image, factor):
    """Pillow's bicubic affine sampling along axis 1 of `image` `(L, N, 3)`:
    output `(l, p)` samples position `t = (p + 0.5) + factor * (l + 0.5)` of
    line `l` (a shear moves each line by a fractional amount, so the 2D
    bicubic filter reduces to 4 taps along the line: the other axis samples
    exactly at a pixel centre). Pillow's transform filter is the cubic
    convolution with a = -1 (not the a = -0.5 of its resize), evaluated as
    `p1 + d * (p2 + d * (p3 + d * p4))` on edge-clamped taps; positions outside
    [0, N) get the fill."""
    lines, length = _size(image)
    # Pixel centres straight from tf.range: written as `range + 0.5`, grappler's
    # arithmetic optimizer may merge that 0.5 with the `- 0.5` below (when
    # the shape is not static), which moves some positions by an ulp.
    position = _centres(length)[None, :]
    line = _centres(lines)[:, None]
    t = position + factor * line
    valid = (t >= 0.0) & (t < tf.cast(length, tf.float64))
    t = t - 0.5
    base = tf.math.floor(t)
    d = (t - base)[..., None]
    first = tf.cast(base, tf.int32) - 1
    taps = tf.clip_by_value(first[..., None] + tf.range(4), 0, length - 1)  # (L, N, 4)
    gathered = tf.gather(tf.cast(image, tf.float64), tf.reshape(taps, [lines, -1]), axis=1, batch_dims=1)
    gathered = tf.reshape(gathered, [lines, length, 4, 3])
    v1, v2, v3, v4 = tf.unstack(gathered, axis=2)
    p2 = v3 - v1
    p3 = 2.0 * (v1 - v2) + v3 - v4
    p4 = v2 - v1 + v4 - v3
    values = v2 + d * (p2 + d * (p3 + d * p4))
    return _fill_where_invalid(valid, _to_uint8(values))


def _shear_x(image, factor):
    # PIL: transform(AFFINE, (1, factor, 0, 0, 1, 0), BICUBIC, fillcolor=128).
    return _shear_lines(image, factor)


def _shear_y(image, factor):
    # PIL: transform(AFFINE, (1, 0, 0, factor, 1, 0), BICUBIC, fillcolor=128):
    # the same along columns.
    return tf.transpose(_shear_lines(tf.transpose(image, [1, 0, 2]), factor), [1, 0, 2])


def _translate_axis(image, fraction, axis):
    """PIL: transform(AFFINE, translation by `fraction * side` px), nearest:
    output index `i` reads input `floor(i + 0.5 + fraction * side)`."""
    side = _size(image)[axis]
    offset = fraction * tf.cast(side, tf.float64)
    source = tf.math.floor(tf.range(side, dtype=tf.float64) + (offset + 0.5))
    source = tf.cast(tf.clip_by_value(source, -1.0, tf.cast(side, tf.float64)), tf.int32)
    valid = (source >= 0) & (source < side)
    sampled = tf.gather(image, tf.clip_by_value(source, 0, side - 1), axis=axis)
    valid = valid[None, :] if axis == 1 else valid[:, None]
    return _fill_where_invalid(tf.broadcast_to(valid, tf.shape(image)[:2]), sampled)


def _translate_x(image, fraction):
    return _translate_axis(image, fraction, axis=1)


def _translate_y(image, fraction):
    return _translate_axis(image, fraction, axis=0)


def _round15(value):
    # Python's `round(value, 15)`, as `Image.rotate` rounds its matrix (to
    # within an ulp, which the 16.16 fixed point below cannot see).
    return tf.round(value * 1e15) / 1e15


def _rotate(image, degrees):
    """`Image.rotate(degrees)` (counter-clockwise about `(W/2, H/2)`, nearest)
    with grey where no input pixel lands. Pillow builds the inverse affine
    matrix in double and samples it in 16.16 fixed point (`affine_fixed`):
    this reproduces both steps, so the sampled pixels are exactly Pillow's."""
    height, width = _size(image)
    angle = -(tf.math.floormod(degrees, 360.0) * (np.pi / 180.0))
    cos, sin = _round15(tf.cos(angle)), _round15(tf.sin(angle))
    a0, a1, a3, a4 = cos, sin, -sin, cos
    cx = tf.cast(width, tf.float64) / 2.0
    cy = tf.cast(height, tf.float64) / 2.0
    a2 = (a0 * -cx + a1 * -cy) + 0.0 + cx
    a5 = (a3 * -cx + a4 * -cy) + 0.0 + cy

    def fix(value):  # 16.16 fixed point, as Pillow's FIX()
        return tf.cast(tf.math.floor(value * 65536.0 + 0.5), tf.int64)

    x0, y0 = fix((a2 + a1 * 0.5) + a0 * 0.5), fix((a5 + a4 * 0.5) + a3 * 0.5)
    cols = tf.range(width, dtype=tf.int64)[None, :]
    rows = tf.range(height, dtype=tf.int64)[:, None]
    xin = tf.math.floordiv(x0 + rows * fix(a1) + cols * fix(a0), 65536)
    yin = tf.math.floordiv(y0 + rows * fix(a4) + cols * fix(a3), 65536)
    valid = (xin >= 0) & (xin < tf.cast(width, tf.int64)) & (yin >= 0) & (yin < tf.cast(height, tf.int64))
    xin = tf.clip_by_value(xin, 0, tf.cast(width, tf.int64) - 1)
    yin = tf.clip_by_value(yin, 0, tf.cast(height, tf.int64) - 1)
    sampled = tf.gather_nd(image, tf.stack([yin, xin], axis=-1))
    return _fill_where_invalid(valid, sampled)


def _color(image, factor):
    # ImageEnhance.Color: blend with the image's grey (L, replicated).
    return _blend(_luminance(image)[..., None], image, factor)


def _contrast(image, factor):
    # ImageEnhance.Contrast: blend with a constant, the rounded mean of L.
    lum = _luminance(image)
    mean = tf.reduce_sum(tf.cast(lum, tf.float64)) / tf.cast(tf.size(lum), tf.float64)
    return _blend(tf.math.floor(mean + 0.5), image, factor)


def _brightness(image, factor):
    # ImageEnhance.Brightness: blend with black.
    return _blend(tf.zeros([], tf.float64), image, factor)


def _sharpness(image, factor):
    """ImageEnhance.Sharpness: blend with ImageFilter.SMOOTH (3x3 kernel
    1 1 1 / 1 5 1 / 1 1 1, over 13, rounded), which leaves the border
    pixels as they are."""
    pixels = tf.cast(image, tf.int32)
    height, width = _size(image)
    total = 4 * pixels[1 : height - 1, 1 : width - 1]
    for dy in range(3):
        for dx in range(3):
            total += pixels[dy : height - 2 + dy, dx : width - 2 + dx]
    # floor(total / 13 + 0.5) in integers: total / 13 is never within
    # Pillow's float32 error of a rounding boundary.
    smooth = tf.math.floordiv(2 * total + 13, 26)
    padded = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    degenerate = tf.where(interior[..., None], padded, pixels)
    return _blend(degenerate, image, factor)


def _posterize(image, bits):
    # ImageOps.posterize: keep the `bits` high bits (clipped to 1..8).
    bits = tf.clip_by_value(tf.cast(tf.round(bits), tf.int32), 1, 8)
    mask = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.left_shift(255, 8 - bits), 255), tf.uint8)
    return tf.bitwise.bitwise_and(image, mask)


def _solarize(image, threshold):
    # ImageOps.solarize: invert the pixels >= threshold.
    return tf.where(tf.cast(image, tf.float64) < threshold, image, 255 - image)


def _autocontrast(image, unused_magnitude=None):
    """ImageOps.autocontrast (cutoff 0): per channel, map [lo, hi] onto
    [0, 255] with Pillow's `int(ix * scale + offset)` in double; a constant
    channel is left unchanged."""
    lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float64)
    hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float64)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    offset = -lo * scale
    mapped = _to_uint8(tf.cast(image, tf.float64) * scale + offset)
    return tf.where(hi > lo, mapped, image)


def _equalize(image, unused_magnitude=None):
    """ImageOps.equalize, per channel: `step = (n - count(max value)) // 255`,
    `lut[i] = (step // 2 + #pixels below i) // step` (clipped to 255); a
    channel with one value or `step == 0` is left unchanged."""
    pixels = tf.cast(image, tf.int32)
    flat = tf.reshape(pixels + tf.range(3) * 256, [-1])
    histogram = tf.reshape(tf.math.bincount(flat, minlength=768, maxlength=768), [3, 256])
    total = tf.reduce_sum(histogram, axis=1)
    top = tf.reduce_max(tf.reshape(pixels, [-1, 3]), axis=0)
    bottom = tf.reduce_min(tf.reshape(pixels, [-1, 3]), axis=0)
    top_count = tf.gather(histogram, top, axis=1, batch_dims=1)
    step = (total - top_count) // 255
    below = tf.cumsum(histogram, axis=1, exclusive=True)
    safe_step = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((safe_step // 2 + below) // safe_step, 255)
    keep = ((top == bottom) | (step == 0))[:, None]
    lut = tf.where(keep, tf.range(256)[None, :], lut)  # (3, 256)
    return tf.cast(tf.gather(tf.reshape(lut, [-1]), pixels + tf.range(3) * 256), tf.uint8)


def _invert(image, unused_magnitude=None):
    return 255 - image


_OPS = {
    "shearX": _shear_x,
    "shearY": _shear_y,
    "translateX": _translate_x,
    "translateY": _translate_y,
    "rotate": _rotate,
    "color": _color,
    "posterize": _posterize,
    "solarize": _solarize,
    "contrast": _contrast,
    "sharpness": _sharpness,
    "brightness": _brightness,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "invert": _invert,
}


@no_autograph
def apply_op(image, name, magnitude):
    """Applies one op, deterministically, as Pillow does on a uint8 image.

    Args:
        image: uint8 tensor `(height, width, 3)`.
        name: one of `OP_NAMES`.
        magnitude: the op's actual value, a float scalar (already signed):
            "shearX"/"shearY": the affine shear factor (PIL's
            `(1, m, 0, 0, 1, 0)` / `(1, 0, 0, m, 1, 0)`); "translateX" /
            "translateY": a FRACTION of the image width / height (the shift
            is `m * side` pixels, PIL's `(1, 0, m * W, 0, 1, 0)`);
            "rotate": degrees, counter-clockwise; "color", "contrast",
            "sharpness", "brightness": the `ImageEnhance` factor (1 =
            unchanged); "posterize": bits kept (rounded, clipped to 1..8);
            "solarize": the threshold (pixels >= it are inverted); ignored
            by "autocontrast", "equalize" and "invert".

    Returns:
        A uint8 tensor of `image`'s shape.
    """
    check_choice("name", name, OP_NAMES)
    image = _as_image(image)
    if tf.is_tensor(magnitude):
        magnitude = tf.cast(magnitude, tf.float64)
    else:  # a Python float: straight to double (via float32 would change it)
        magnitude = tf.constant(magnitude, tf.float64)
    result = _OPS[name](image, magnitude)
    result.set_shape(image.shape)
    return result


# --------------------------------------------------------------------------
# Random application
# --------------------------------------------------------------------------


def _level_values():
    """(14, NUM_LEVELS) float64: the value of each op at each level (zero for
    the ops without a magnitude), as the official code's `np.linspace`."""
    table = np.zeros((len(OP_NAMES), NUM_LEVELS), "float64")
    for index, name in enumerate(OP_NAMES):
        if name in MAGNITUDE_RANGES:
            lo, hi = MAGNITUDE_RANGES[name]
            table[index] = np.linspace(lo, hi, NUM_LEVELS)
            if name == "posterize":
                table[index] = np.round(table[index])
    return table


_LEVEL_VALUES = _level_values()
# 0: unsigned or no magnitude, 1: signed value, 2: enhancement factor 1 +- m.
_SIGN_KIND = np.array(
    [1 if n in SIGNED_OPS else 2 if n in ENHANCE_OPS else 0 for n in OP_NAMES], "int32"
)


def policy_table(policy):
    """The sub-policies of `policy`, as `(p1, op1, level1, p2, op2, level2)`.

    Args:
        policy: one of `POLICY_NAMES`.

    Returns:
        A list of 6-tuples, in the policy's order (`auto_augment` picks one
        of them uniformly).
    """
    check_choice("policy", policy, POLICY_NAMES)
    return [tuple(sub_policy) for sub_policy in POLICIES[policy]]


def _policy_arrays(policy):
    table = policy_table(policy)
    ops = np.array([[OP_NAMES.index(s[1]), OP_NAMES.index(s[4])] for s in table], "int32")
    levels = np.array([[s[2], s[5]] for s in table], "int32")
    probabilities = np.array([[s[0], s[3]] for s in table], "float32")
    return ops, levels, probabilities


def _signs(seed, shape):
    # +1 or -1, each with probability 0.5.
    return tf.where(tf.random.stateless_uniform(shape, seed) < 0.5, 1.0, -1.0)


def _signed_value(op_index, value, sign):
    """The value `apply_op` takes: `sign * value` for the signed ops, the
    factor `1 + sign * value` for the enhancement ops, `value` otherwise."""
    kind = tf.gather(tf.constant(_SIGN_KIND), op_index)
    sign = tf.cast(sign, tf.float64)
    return tf.where(kind == 1, sign * value, tf.where(kind == 2, 1.0 + sign * value, value))


@no_autograph
def auto_augment_decisions(policy, seed):
    """The random decisions `auto_augment` makes for `seed`, without touching
    an image (cheap: usable to check their frequencies).

    Args:
        policy: one of `POLICY_NAMES`.
        seed: int32/int64 tensor of shape `[2]`, a stateless-random seed.

    Returns:
        A dict of tensors: "sub_policy" (int32 scalar, uniform over the
        policy's sub-policies), "ops" (int32 `[2]`, indices into
        `OP_NAMES`), "apply" (bool `[2]`: op k is applied, with probability
        p_k), "sign" (float32 `[2]`, +-1 with probability 0.5) and
        "magnitude" (float64 `[2]`, the value passed to `apply_op`).
    """
    ops, levels, probabilities = _policy_arrays(policy)
    choice_seed, apply_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    sub_policy = tf.random.stateless_uniform(
        [], choice_seed, minval=0, maxval=len(ops), dtype=tf.int32
    )
    op_indices = tf.gather(tf.constant(ops), sub_policy)
    apply = tf.random.stateless_uniform([2], apply_seed) < tf.gather(tf.constant(probabilities), sub_policy)
    sign = _signs(sign_seed, [2])
    level_indices = tf.gather(tf.constant(levels), sub_policy)
    values = tf.gather_nd(tf.constant(_LEVEL_VALUES), tf.stack([op_indices, level_indices], -1))
    return {
        "sub_policy": sub_policy,
        "ops": op_indices,
        "apply": apply,
        "sign": sign,
        "magnitude": _signed_value(op_indices, values, sign),
    }


def _apply_by_index(image, op_index, magnitude):
    """The op `OP_NAMES[op_index]` only: `tf.switch_case` runs one branch."""
    branches = [lambda name=name: apply_op(image, name, magnitude) for name in OP_NAMES]
    result = tf.switch_case(op_index, branches)
    result.set_shape(image.shape)
    return result


def _maybe_apply(image, apply, op_index, magnitude):
    result = tf.cond(apply, lambda: _apply_by_index(image, op_index, magnitude), lambda: image)
    result.set_shape(image.shape)
    return result


@no_autograph
def auto_augment(image, policy, seed):
    """AutoAugment on one image, as the papers' training code applies it.

    Picks one sub-policy of `policy` uniformly, applies its first op with
    probability p1, then its second with probability p2, each at its level's
    value (`linspace(lo, hi, 10)[level]`), with a random sign for the signed
    ops. Only the applied ops are computed.

    Args:
        image: uint8 tensor `(height, width, 3)`.
        policy: one of `POLICY_NAMES` ("cifar10", "svhn", "imagenet").
        seed: int32/int64 tensor of shape `[2]`, a stateless-random seed:
            the same seed gives the same image.

    Returns:
        A uint8 tensor of `image`'s shape.
    """
    check_choice("policy", policy, POLICY_NAMES)
    image = _as_image(image)
    decisions = auto_augment_decisions(policy, seed)
    for k in range(2):
        image = _maybe_apply(image, decisions["apply"][k], decisions["ops"][k], decisions["magnitude"][k])
    return image


@no_autograph
def rand_augment_decisions(num_ops, magnitude, seed, magnitude_std=0.0):
    """The random decisions `rand_augment` makes for `seed`.

    Args:
        num_ops: positive int, the number of ops applied.
        magnitude: float in [0, 1], the fraction of each op's range.
        seed: int32/int64 tensor of shape `[2]`, a stateless-random seed.
        magnitude_std: >= 0; with > 0, each op's magnitude is drawn from a
            normal of mean `magnitude` and this std, clipped to [0, 1]
            (timm's `mstd`; its `rand-m9-mstd0.5` is magnitude 0.9, std
            0.05 here). 0: every op at `magnitude` (no draw).

    Returns:
        A dict of tensors: "ops" (int32 `[num_ops]`, uniform indices into
        `OP_NAMES`, with replacement), "sign" (float32 `[num_ops]`, +-1) and
        "magnitude" (float64 `[num_ops]`, the values passed to `apply_op`).
    """
    num_ops = check_positive_int("num_ops", num_ops)
    magnitude = check_range("magnitude", magnitude, 0.0, 1.0)
    magnitude_std = check_range("magnitude_std", magnitude_std, 0.0, None)
    low, high = np.zeros(len(OP_NAMES), "float64"), np.zeros(len(OP_NAMES), "float64")
    for index, name in enumerate(OP_NAMES):
        if name in MAGNITUDE_RANGES:
            low[index], high[index] = MAGNITUDE_RANGES[name]
    posterize = np.array([name == "posterize" for name in OP_NAMES])
    op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    ops = tf.random.stateless_uniform([num_ops], op_seed, minval=0, maxval=len(OP_NAMES), dtype=tf.int32)
    sign = _signs(sign_seed, [num_ops])
    if magnitude_std:
        # Its own stream, so the ops and signs are those of `magnitude_std=0`.
        noise_seed = tf.random.experimental.stateless_fold_in(seed, 3)
        noise = tf.random.stateless_normal([num_ops], noise_seed, dtype=tf.float64)
        fractions = tf.clip_by_value(magnitude + magnitude_std * noise, 0.0, 1.0)
    else:
        fractions = tf.fill([num_ops], tf.constant(magnitude, tf.float64))
    values = tf.gather(tf.constant(low), ops) + fractions * tf.gather(tf.constant(high - low), ops)
    values = tf.where(tf.gather(tf.constant(posterize), ops), tf.round(values), values)
    return {"ops": ops, "sign": sign, "magnitude": _signed_value(ops, values, sign)}


@no_autograph
def rand_augment(image, num_ops, magnitude, seed, magnitude_std=0.0):
    """RandAugment on the same 14 ops: `num_ops` ops drawn uniformly with
    replacement, each always applied at `magnitude` of its range
    (`lo + magnitude * (hi - lo)`, posterize rounded), with a random sign
    for the signed ops. Only the drawn ops are computed.

    Args:
        image: uint8 tensor `(height, width, 3)`.
        num_ops: positive int, the number of ops applied in sequence.
        magnitude: float in [0, 1], the fraction of each op's magnitude range.
        seed: int32/int64 tensor of shape `[2]`, a stateless-random seed:
            the same seed gives the same image.
        magnitude_std: the std of each op's magnitude around `magnitude`
            (see `rand_augment_decisions`; 0: fixed).

    Returns:
        A uint8 tensor of `image`'s shape.
    """
    image = _as_image(image)
    decisions = rand_augment_decisions(num_ops, magnitude, seed, magnitude_std)
    for k in range(int(num_ops)):
        image = _apply_by_index(image, decisions["ops"][k], decisions["magnitude"][k])
    return image
