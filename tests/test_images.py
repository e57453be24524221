"""The resize policies of `keras_smallvit.images` (training, evaluation,
prediction and serving share them) against a NumPy/PIL reference and
Keras' own `crop_to_aspect_ratio` / `pad_to_aspect_ratio`.

TensorFlow code whatever the backend; the Keras comparison runs the
backend's own `keras.ops.image.resize`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_smallvit import images
from keras_smallvit.training import TrainConfig
from tests import references

# (height, width): wider and taller than the targets, odd sides, margins of odd
# length (one pixel lost to the symmetric padding), a box of one pixel.
SHAPES = ((41, 23), (23, 41), (7, 16), (41, 24), (5, 3), (100, 9), (1, 30), (16, 16))
SIZES = ((16, 16), (12, 20), (9, 5))
CASES = [(shape, size) for shape in SHAPES for size in SIZES]
# PIL's and TensorFlow's float32 sums of the same weights.
ATOL = 5e-6
POLICIES = ("squash", "crop", "pad")


def random_image(shape, seed=0):
    return np.random.default_rng(seed).random((*shape, 3), dtype=np.float32)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_matches_the_numpy_pil_reference_and_keras(policy):
    for (height, width), size in CASES:
        image = random_image((height, width))
        expected = references.resize_image(image, size, policy)
        got = images.resize_float_images(tf.constant(image), size, policy).numpy()
        case = f"{policy} {height}x{width} -> {size}"
        assert got.shape == (*size, 3), case
        np.testing.assert_allclose(got, expected, atol=ATOL, err_msg=case)
        # A batch, and the ONNX export's matrix products: the same values.
        batch = tf.constant(np.stack([image, image[::-1]]))
        for resize in (images.resize_float_images, images.resize_float_images_as_matmuls):
            resized = resize(batch, size, policy).numpy()
            np.testing.assert_allclose(resized[0], expected, atol=ATOL, err_msg=f"{resize.__name__} {case}")
            np.testing.assert_allclose(resized[1], references.resize_image(image[::-1], size, policy), atol=ATOL)
        # Keras' own policy (`crop_to_aspect_ratio`, `pad_to_aspect_ratio`), on this backend.
        options = {"crop": {"crop_to_aspect_ratio": True}, "pad": {"pad_to_aspect_ratio": True}}.get(policy, {})
        keras_resized = keras.ops.image.resize(image[None], size, "bilinear", antialias=True, **options)
        keras_resized = np.clip(keras.ops.convert_to_numpy(keras_resized)[0], 0.0, 1.0)
        np.testing.assert_allclose(got, keras_resized, atol=ATOL, err_msg=f"keras {case}")


def test_the_boxes_by_hand():
    """Exact cases, no interpolation: the box already at the target size."""
    white = np.ones((4, 2, 1), np.float32)
    padded = images.resize_float_images(tf.constant(white), (4, 4), "pad").numpy()[..., 0]
    np.testing.assert_array_equal(padded, np.tile([0, 1, 1, 0], (4, 1)))  # black | image | black
    ramp = np.arange(12, dtype=np.float32).reshape(2, 6, 1) / 11
    cropped = images.resize_float_images(tf.constant(ramp), (2, 2), "crop").numpy()
    np.testing.assert_array_equal(cropped, ramp[:, 2:4])  # the centred 2x2 box
    squashed = images.resize_float_images(tf.constant(ramp), (1, 3), "squash")
    for policy in ("crop", "pad"):  # the aspect ratio already the target's: the whole image
        np.testing.assert_array_equal(images.resize_float_images(tf.constant(ramp), (1, 3), policy), squashed)
    assert references.aspect_box(41, 23, (16, 16), "crop") == (9, 0, 23, 23)
    assert references.aspect_box(41, 24, (16, 16), "pad") == (0, -8, 41, 40)  # margin 17: 8 on each side


@pytest.mark.parametrize("policy", POLICIES)
def test_any_size_in_graph_mode_and_uint8_values(policy):
    """Dynamic shapes (the serving graph and tf.data take any H, W), and the
    uint8 path of prediction and serving equals the reference rounded."""
    size = (16, 16)
    any_size = [tf.TensorSpec([None, None, None, 3], tf.uint8)]
    graphs = {
        as_matmuls: tf.function(lambda x, m=as_matmuls: images.resize_uint8_images(x, size, policy, m), any_size)
        for as_matmuls in (False, True)
    }
    for shape in ((41, 23), (7, 16), (16, 16)):
        batch = np.random.default_rng(1).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
        for as_matmuls in (False, True):
            got = images.resize_uint8_images(tf.constant(batch), size, policy, as_matmuls).numpy()
            expected = references.resize_uint8_images(batch, size, policy, rounded=got)
            np.testing.assert_array_equal(got, expected, err_msg=str(shape))
            np.testing.assert_array_equal(graphs[as_matmuls](tf.constant(batch)), got)
    dataset = tf.data.Dataset.from_generator(
        lambda: (random_image(s) for s in ((41, 23), (7, 16))), output_signature=tf.TensorSpec([None, None, 3])
    ).map(lambda image: images.resize_float_images(image, size, policy))
    for image, shape in zip(dataset, ((41, 23), (7, 16))):
        np.testing.assert_allclose(image, references.resize_image(random_image(shape), size, policy), atol=ATOL)


def test_an_unknown_policy_names_the_allowed_ones():
    assert images.RESIZE_POLICIES == POLICIES
    for call in (
        lambda: images.resize_float_images(tf.zeros((4, 4, 3)), (2, 2), "bogus"),
        lambda: images.resize_float_images_as_matmuls(tf.zeros((1, 4, 4, 3)), (2, 2), "bogus"),
        lambda: TrainConfig(resize="bogus").check_fields(),
    ):
        with pytest.raises(ValueError, match=r"`(policy|resize)`: 'bogus'\. Allowed values: .*squash.*crop.*pad"):
            call()


@pytest.mark.parametrize("policy", ("crop", "pad"))
def test_the_training_pipeline_resizes_by_the_run_config(tmp_path, policy):
    """`TrainConfig.resize` reaches the data pipeline, which stores exactly
    what prediction and serving compute (`resize_uint8_images`)."""
    from PIL import Image

    from keras_smallvit.training import load_split

    rng = np.random.default_rng(3)
    pictures = {}
    for split in ("train", "test"):
        for name, shape in (("tall", (41, 23)), ("wide", (23, 41))):
            pictures[split, name] = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(pictures[split, name]).save(tmp_path / split / name / "0.png")
    config = TrainConfig(dataset=f"folder:{tmp_path}", image_size=16, resize=policy)
    loaded = load_split(config, "train")
    for index, name in enumerate(("tall", "wide")):
        expected = images.resize_uint8_images(tf.constant(pictures["train", name]), (16, 16), policy).numpy()
        np.testing.assert_array_equal(loaded.images[loaded.labels == index][0], expected, err_msg=name)


@pytest.mark.parametrize("policy", ("crop", "pad"))
def test_prediction_resizes_by_the_models_policy(policy):
    """`predict_images` of a model whose logits are its input pixels: their
    softmax is that of the reference's resized, normalised pixels."""
    from keras_smallvit.inference import predict_images

    pixels = keras.Input((16, 16, 3))
    model = keras.Model(pixels, keras.layers.Flatten()(pixels))
    model.preprocessing = {"scale": 1 / 255, "mean": 0.5, "std": 0.25, "resize": policy}
    rng = np.random.default_rng(4)
    tall_and_wide = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((41, 23, 3), (7, 16, 3))]
    got = predict_images(model, tall_and_wide).probabilities
    for image, probabilities in zip(tall_and_wide, got):
        pipeline = images.resize_uint8_images(tf.constant(image[None]), (16, 16), policy)
        resized = references.resize_uint8_images(image[None], (16, 16), policy, rounded=pipeline)
        np.testing.assert_allclose(probabilities, references.softmax(((resized / 255 - 0.5) / 0.25).ravel()), rtol=1e-5)
