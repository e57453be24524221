"""NumPy references written from the papers' formulas, independent of the package code."""

import math

import keras
import numpy as np


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm(x, gamma, beta, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def twist(attention, threshold, scale, eps=1e-6):
    """SATA (Chen et al. 2023, Eq. 6 and 17), row by row with explicit loops."""
    attention = np.asarray(attention, np.float64)
    out = attention.copy()
    rows = attention.reshape(-1, attention.shape[-1])
    flat_out = out.reshape(-1, attention.shape[-1])
    for r, row in enumerate(rows):
        trivial = [j for j, a in enumerate(row) if a <= threshold * row.max()]
        mass = sum(row[j] for j in trivial)
        for j in trivial:
            flat_out[r, j] = scale * row[j] ** 2 / (mass + eps)
    return out


def twist_grad(attention, upstream, threshold, scale, eps=1e-6):
    """d(sum(upstream * twist(A)))/dA and /ds, the mask held constant."""
    a = np.asarray(attention, np.float64)
    w = np.asarray(upstream, np.float64)
    m = (a <= threshold * a.max(-1, keepdims=True)).astype(np.float64)
    d = (m * a).sum(-1, keepdims=True) + eps
    grad_a = (1 - m) * w + m * scale * 2 * a * w / d - m * scale * (w * m * a**2).sum(-1, keepdims=True) / d**2
    grad_s = (w * m * a**2 / d).sum()
    return grad_a, grad_s


def shift_copy(images, dy, dx):
    """output[b, i, j] = images[b, i + dy, j + dx], zero outside."""
    b, h, w, c = images.shape
    out = np.zeros_like(images)
    for i in range(h):
        for j in range(w):
            si, sj = i + dy, j + dx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = images[:, si, sj]
    return out


DIRECTIONS = {
    # (dy, dx): the official code's left-up copy reads from the upper left.
    "diagonal": [(-1, -1), (-1, 1), (1, -1), (1, 1)],
    "cardinal": [(0, -1), (0, 1), (-1, 0), (1, 0)],
}
DIRECTIONS["all"] = DIRECTIONS["diagonal"] + DIRECTIONS["cardinal"]


def patches(images, p):
    """einops 'b (h p1) (w p2) c -> b (h w) (p1 p2 c)' with loops."""
    b, h, w, c = images.shape
    out = []
    for gi in range(h // p):
        for gj in range(w // p):
            out.append(images[:, gi * p : (gi + 1) * p, gj * p : (gj + 1) * p, :].reshape(b, -1))
    return np.stack(out, axis=1)


def spt_features(images, patch_size, directions, shift):
    copies = [images] + [shift_copy(images, dy * shift, dx * shift) for dy, dx in DIRECTIONS[directions]]
    return patches(np.concatenate(copies, axis=-1), patch_size)


def attention(x, qkv_kernel, out_kernel, out_bias, num_heads, head_dim, scale=None, diagonal_mask=False, sata=None):
    """Multi-head self-attention; returns (output, probabilities)."""
    b, n, _ = x.shape
    qkv = x @ qkv_kernel
    q, k, v = [qkv[..., i * num_heads * head_dim : (i + 1) * num_heads * head_dim] for i in range(3)]
    q, k, v = [t.reshape(b, n, num_heads, head_dim).transpose(0, 2, 1, 3) for t in (q, k, v)]
    scale = np.full(num_heads, head_dim**-0.5) if scale is None else np.asarray(scale)
    scores = np.einsum("bhid,bhjd->bhij", q, k) * scale[None, :, None, None]
    if diagonal_mask:
        scores = np.where(np.eye(n, dtype=bool), -np.inf, scores)
    probs = softmax(scores)
    if sata is not None:
        probs = twist(probs, sata["threshold"], sata["scale"])
    out = np.einsum("bhij,bhjd->bhid", probs, v).transpose(0, 2, 1, 3).reshape(b, n, -1)
    return out @ out_kernel + out_bias, probs


def context_broadcast(x, ratio, channel_scale=None):
    mean = x.mean(axis=1, keepdims=True)
    if channel_scale is not None:
        mean = mean * channel_scale
    return (1 - ratio) * x + ratio * mean


def block_reference(block, x, cb_position=None, ratio=0.5, lsa=False, sata=None):
    """Pre-norm block in NumPy from the layer's weights."""
    w = lambda v: np.asarray(keras.ops.convert_to_numpy(v), np.float64)  # noqa: E731
    attn = block.attention_layer

    def cb(h, position):
        return context_broadcast(h, ratio) if cb_position == position else h

    h = layer_norm(x, w(block.attention_norm.gamma), w(block.attention_norm.beta))
    h, _ = attention(
        h,
        w(attn.qkv.kernel),
        w(attn.output_projection.kernel),
        w(attn.output_projection.bias),
        attn.num_heads,
        attn.head_dim,
        scale=w(attn.temperature) if lsa else None,
        diagonal_mask=lsa,
        sata=sata,
    )
    x = x + cb(h, "attention_output")
    h = layer_norm(x, w(block.mlp_norm.gamma), w(block.mlp_norm.beta))
    h = gelu(h @ w(block.mlp_dense_1.kernel) + w(block.mlp_dense_1.bias))
    h = h @ w(block.mlp_dense_2.kernel) + w(block.mlp_dense_2.bias)
    x = x + cb(h, "mlp_output")
    return cb(x, "block_output")


def aspect_box(height, width, size, policy):
    """`(top, left, box_height, box_width)` of the image region a resize
    policy brings to `size`, by the formulas of Keras' NumPy backend
    (`keras.ops.image.resize`'s `crop_to_aspect_ratio` /
    `pad_to_aspect_ratio`): float division, truncated; negative `top` /
    `left`: padding."""
    target_height, target_width = size
    aspect_height = int(float(width * target_height) / target_width)
    aspect_width = int(float(height * target_width) / target_height)
    if policy == "squash":
        return 0, 0, height, width
    if policy == "crop":
        crop_height = max(min(height, aspect_height), 1)
        crop_width = max(min(width, aspect_width), 1)
        return int((height - crop_height) / 2), int((width - crop_width) / 2), crop_height, crop_width
    pad_top = int(float(max(height, aspect_height) - height) / 2)
    pad_left = int(float(max(width, aspect_width) - width) / 2)
    return -pad_top, -pad_left, height + 2 * pad_top, width + 2 * pad_left


def resize_image(image, size, policy):
    """A float image `(H, W, C)` in [0, 1] -> `size` by a resize policy: the
    `aspect_box` cut out, or padded with zeros (NumPy), then PIL's bilinear
    resize, channel by channel in float32 ("F" images): PIL's triangle
    filter widens with the downscale factor, the antialiasing of
    `tf.image.resize(..., antialias=True)`. Clipped to [0, 1]."""
    from PIL import Image

    top, left, box_height, box_width = aspect_box(image.shape[0], image.shape[1], size, policy)
    if policy == "pad":
        box = np.pad(image, ((-top, -top), (-left, -left), (0, 0)))
    else:
        box = image[top : top + box_height, left : left + box_width]
    assert box.shape[:2] == (box_height, box_width)
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(box[..., c], np.float32), "F").resize(size[::-1], Image.BILINEAR))
        for c in range(box.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def resize_uint8_images(batch, size, policy, rounded):
    """`resize_image` of uint8 images `(N, H, W, C)`, rounded to uint8 values
    (float32), as the pipeline stores its images. Exact halves (upsampling
    makes many), which float32 noise rounds either way, are taken from
    `rounded`, the code under test's values: checked within 0.5 of the
    reference everywhere, equal to it elsewhere."""
    exact = np.stack([resize_image(image / np.float32(255), size, policy) for image in batch]) * 255
    rounded = np.asarray(rounded)
    tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
    assert np.all(np.abs(rounded - exact) <= 0.5 + 1e-3), np.abs(rounded - exact).max()
    return np.where(tie, rounded, np.round(exact)).astype(np.float32)
