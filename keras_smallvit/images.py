"""Image files and the resize of the training pipeline, in TensorFlow ops.

One resize for training, evaluation, prediction and serving (TensorFlow by
nature: it runs in tf.data and in the served graph, whatever the Keras
backend): uint8 pixels -> float in [0, 1] -> `resize` policy to the model's
size -> clipped -> rounded back to uint8 values (the pipeline keeps its
images as uint8). And the normalisation after it, `normalize`.
"""

import collections
import os
import re
import types
import warnings

import numpy as np

# How an image of any size becomes the model's `(height, width)`, each by
# bilinear resize with antialiasing (`tf.image.resize(..., antialias=True)`):
# - "squash": the whole image, each side scaled to the model's (the aspect
#   ratio is not kept);
# - "crop": the largest centred box of the model's aspect ratio (the rest
#   is cut off), as Keras' `crop_to_aspect_ratio`;
# - "pad": the image padded with black (zeros) on both sides to the model's
#   aspect ratio, then resized (nothing is cut off), as Keras'
#   `pad_to_aspect_ratio`: padded first, so the black border is resized
#   with the image (its edge pixels blend), not added after the resize.
# The boxes follow Keras' rounding exactly (see `aspect_box`).
RESIZE_POLICIES = ("squash", "crop", "pad")
# Image files, case-insensitive: what `tf.io.decode_image` reads, and TIFF
# (decoded with Pillow: TensorFlow has no TIFF decoder).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# TIFF's magic numbers (little- and big-endian): by content, not by name.
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")


def normalize(images, preprocessing):
    """`(images * scale - mean) / std` on float32 images (a tensor or a NumPy array)."""
    x = images * preprocessing["scale"]
    if preprocessing["mean"] is not None:
        x = x - np.asarray(preprocessing["mean"], dtype="float32")
    if preprocessing["std"] is not None:
        x = x / np.asarray(preprocessing["std"], dtype="float32")
    return x


def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


# `os` as the file functions `walk_image_files` calls (`tf.io.gfile` has the same).
LOCAL_FILES = types.SimpleNamespace(listdir=os.listdir, isdir=os.path.isdir)


def walk_image_files(directory, files=LOCAL_FILES, skipped=None, seen=None):
    """Sorted image files below `directory`, nested folders included.

    Symlinks are followed; a folder met again (a symlink loop) is skipped.
    Hidden entries are skipped.

    Args:
        directory: the folder.
        files: `listdir`/`isdir` functions (`LOCAL_FILES`, or `tf.io.gfile`
            for remote paths).
        skipped: a `collections.Counter` that counts what is not an image
            ("hidden", "non-image files", "repeated folders (symlink loops)").
        seen: the real paths of the folders walked already (shared between
            calls to cut loops across them).
    """
    skipped = collections.Counter() if skipped is None else skipped
    seen = set() if seen is None else seen
    seen.add(_real_path(directory))
    found = []
    for entry in sorted(e.rstrip("/") for e in files.listdir(directory)):
        path = os.path.join(directory, entry)
        if entry.startswith("."):
            skipped["hidden"] += 1
        elif files.isdir(path):
            if _real_path(path) in seen:
                skipped["repeated folders (symlink loops)"] += 1
            else:
                found += walk_image_files(path, files, skipped, seen)
        elif is_image_file(entry):
            found.append(path)
        else:
            skipped["non-image files"] += 1
    return found


def _real_path(path):
    return path if "://" in str(path) else os.path.realpath(path)


def list_image_files(paths):
    """Image files of `paths` in order: a file as given, a folder as every
    image file below it (`walk_image_files`).

    Raises:
        FileNotFoundError: a path that does not exist, or a folder with no
            image file (named, with the extensions looked for).
    """
    files = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            found = walk_image_files(path)
            if not found:
                raise FileNotFoundError(
                    f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder {path!r}."
                )
            files += found
        else:
            raise FileNotFoundError(f"Image file or folder {path!r} does not exist.")
    return files


def decode_image_file(path, channels=3):
    """The uint8 image `(H, W, channels)` of an image file (first frame of a GIF).

    Raises:
        ValueError: naming the file, when it does not decode.
    """
    import tensorflow as tf

    try:
        return decode_image_graph(tf.constant(os.fspath(path)), channels).numpy()
    except tf.errors.OpError as error:
        reason = readable_error(error.message) or type(error).__name__
    except ValueError as error:  # Pillow's, raised as is when eager
        reason = str(error)
    raise ValueError(f"Cannot read image file {path!r}: {reason}")


def readable_error(message):
    """The first line of a TensorFlow error message, without its
    `{{function_node ...}}` prefix and ` [Op:...]` suffix."""
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", line).strip()


def decode_image_graph(path, channels=3):
    """The uint8 image `(H, W, channels)` of the file at `path` (a string
    tensor), in TensorFlow ops (tf.data, tf.function): `tf.io.decode_image`
    (first frame of a GIF), or Pillow for a TIFF file, recognised by its
    content."""
    import tensorflow as tf

    data = tf.io.read_file(path)
    is_tiff = tf.reduce_any(tf.equal(tf.strings.substr(data, 0, 4), list(TIFF_SIGNATURES)))

    def with_pillow():
        image = tf.numpy_function(_decode_with_pillow, [data, channels], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (None, None, channels))

    def with_tensorflow():
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return tf.ensure_shape(image, (None, None, channels))

    return tf.cond(is_tiff, with_pillow, with_tensorflow)


def _decode_with_pillow(data, channels):
    import io

    from PIL import Image

    data = data.item() if isinstance(data, np.ndarray) else data
    try:
        with warnings.catch_warnings():  # a damaged file's warnings: the error below says it
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(bytes(data))) as image:
                image = image.convert({1: "L", 3: "RGB", 4: "RGBA"}[int(channels)])
                return np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, int(channels))
    except Exception as error:  # Pillow's many error types: one message for tf.data
        detail = re.sub(r"\s*<[^>]*>", "", str(error)).strip()
        raise ValueError(f"TIFF file that does not decode ({type(error).__name__}: {detail})") from None


def _check_policy(policy):
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"Invalid resize `policy`: {policy!r}. Allowed values: {', '.join(RESIZE_POLICIES)}.")


def aspect_box(height, width, size, policy="squash"):
    """`(top, left, box_height, box_width)`: the box of an image `(height,
    width)` (int32 tensors, or ints) that the resize `policy` brings to
    `size` `(height, width)`. Inside the image for "crop"; around it for
    "pad" (negative `top`/`left`: black padding).

    Keras' conventions (`keras.ops.image.resize`, `crop_to_aspect_ratio` /
    `pad_to_aspect_ratio`, TensorFlow backend): box sides truncated
    (`width * target_height / target_width`), at least 1 pixel for a crop,
    starts at the truncated half of the margin; a padded image gets that
    half on both sides (an odd margin loses one pixel). Keras divides in
    float32; the integer division here gives the same boxes up to sides of
    ~16 million pixels (where float32 stops representing the quotient).
    """
    import tensorflow as tf

    _check_policy(policy)
    zero = tf.constant(0, tf.int32)
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    if policy == "squash":
        return zero, zero, height, width
    target_height, target_width = int(size[0]), int(size[1])
    aspect_height = width * target_height // target_width
    aspect_width = height * target_width // target_height
    if policy == "crop":
        box_height = tf.maximum(tf.minimum(height, aspect_height), 1)
        box_width = tf.maximum(tf.minimum(width, aspect_width), 1)
        return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width
    pad_top = (tf.maximum(height, aspect_height) - height) // 2
    pad_left = (tf.maximum(width, aspect_width) - width) // 2
    return -pad_top, -pad_left, height + 2 * pad_top, width + 2 * pad_left


def resize_float_images(images, size, policy="squash"):
    """float32 images in [0, 1] `(..., H, W, C)` -> `size` `(height, width)`,
    clipped to [0, 1], by the resize `policy` (see `RESIZE_POLICIES`): the
    `aspect_box` cut out or padded, then resized. Any H and W (dynamic
    shapes; graph-safe). Images already at `size` are returned unchanged
    (an identity resize still costs a pass)."""
    import tensorflow as tf

    shape = tf.shape(images)
    top, left, box_height, box_width = aspect_box(shape[-3], shape[-2], size, policy)
    if policy == "crop":
        images = images[..., top : top + box_height, left : left + box_width, :]
    elif policy == "pad":
        # `[[-top, -top], [-left, -left], [0, 0]]` below as many [0, 0] rows as leading axes.
        paddings = tf.convert_to_tensor([[-top, -top], [-left, -left], [0, 0]])
        images = tf.pad(images, tf.pad(paddings, [[tf.rank(images) - 3, 0], [0, 0]]))
    same = tf.logical_and(tf.equal(box_height, size[0]), tf.equal(box_width, size[1]))

    def resize():
        resized = tf.image.resize(images, size, method="bilinear", antialias=True)
        return tf.clip_by_value(resized, 0.0, 1.0)

    return tf.cond(same, lambda: images, resize)


def _antialias_weights(input_size, output_size, box_start=0, box_size=None):
    """`(output_size, input_size)` weights of TensorFlow's antialiased
    bilinear resize along one axis (its `ScaleAndTranslate` with a triangle
    kernel widened by the downscale factor), for any `input_size` tensor,
    of the box `[box_start, box_start + box_size)` of the input (default:
    all of it): input pixels outside the box weigh 0 (a crop), box pixels
    outside the input are zeros (padding: they count in the normalisation
    only)."""
    import tensorflow as tf

    box_size = input_size if box_size is None else box_size
    input_f, output_f = tf.cast(input_size, tf.float32), tf.cast(output_size, tf.float32)
    start_f, box_f = tf.cast(box_start, tf.float32), tf.cast(box_size, tf.float32)
    inverse_scale = box_f / output_f
    kernel_scale = tf.maximum(inverse_scale, 1.0)
    centres = start_f + (tf.range(output_f) + 0.5) * inverse_scale

    def triangle(positions):
        return tf.maximum(0.0, 1.0 - tf.abs(positions[None, :] - centres[:, None]) / kernel_scale)

    sources = tf.range(input_f) + 0.5
    in_box = tf.cast(tf.logical_and(sources > start_f, sources < start_f + box_f), tf.float32)
    total = tf.reduce_sum(triangle(start_f + tf.range(box_f) + 0.5), axis=1, keepdims=True)
    return triangle(sources) * in_box[None, :] / total


def resize_float_images_as_matmuls(images, size, policy="squash"):
    """`resize_float_images` of a batch `(B, H, W, C)` as two matrix products
    (the crop or padding folded into the weights): the same values to
    ~1e-6, in ops ONNX has (tf2onnx cannot convert `ScaleAndTranslate`).
    Written by hand for that reason."""
    import tensorflow as tf

    shape = tf.shape(images)
    top, left, box_height, box_width = aspect_box(shape[1], shape[2], size, policy)
    row_weights = _antialias_weights(shape[1], size[0], top, box_height)
    column_weights = _antialias_weights(shape[2], size[1], left, box_width)
    rows = tf.einsum("oh,bhwc->bowc", row_weights, images)
    resized = tf.einsum("pw,bowc->bopc", column_weights, rows)
    return tf.clip_by_value(resized, 0.0, 1.0)


def resize_uint8_images(images, size, policy="squash", as_matmuls=False):
    """uint8 images (a tensor `(..., H, W, C)`) -> float32 images of uint8
    values `(..., size[0], size[1], C)`, exactly as the training pipeline
    stores them (`keras_smallvit.data` resizes, `load_split` rounds)."""
    import tensorflow as tf

    images = tf.cast(images, tf.float32) * (1 / 255.0)
    resize = resize_float_images_as_matmuls if as_matmuls else resize_float_images
    return tf.round(resize(images, size, policy) * 255.0)


def load_images(sources, image_size, channels=3, policy="squash"):
    """`(names, uint8 batch (N, height, width, channels))` of `sources` (file
    paths, folders, uint8 arrays `(H, W, C)` or one uint8 batch), each
    resized as in training.

    Raises:
        ValueError: an array that is not uint8 with `channels` channels, or a
            file that does not decode (every such file named at once).
    """
    import tensorflow as tf

    if isinstance(sources, np.ndarray) and sources.ndim == 4:
        sources = list(sources)
    elif isinstance(sources, (str, os.PathLike, np.ndarray)):
        sources = [sources]
    from tqdm.auto import tqdm

    items = []  # (name, array or None): a folder stands for all its image files
    for index, source in enumerate(sources):
        if isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim != 3 or source.shape[-1] != channels:
                raise ValueError(
                    f"Invalid image {index}: {source.dtype} array of shape {source.shape}. Expected uint8 "
                    f"(height, width, {channels}) pixels, or an image file path."
                )
            items.append((f"array[{index}]", source))
        else:
            items += [(path, None) for path in list_image_files([source])]
    names, images, unreadable = [], [], []
    for name, image in tqdm(items, desc="reading images", unit="img", disable=len(items) < 256):
        if image is None:
            try:
                image = decode_image_file(name, channels)
            except ValueError as error:
                unreadable.append(str(error))
                continue
        names.append(name)
        images.append(image)
    if unreadable:
        raise ValueError(f"{len(unreadable)} image file(s) cannot be read:\n  " + "\n  ".join(unreadable))
    resized = [
        resize_uint8_images(tf.constant(image), tuple(image_size), policy).numpy().astype("uint8")
        for image in images
    ]
    batch = np.stack(resized) if resized else np.zeros((0, *image_size, channels), "uint8")
    return names, batch
