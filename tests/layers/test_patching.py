import numpy as np
import pytest

from keras_smallvit.layers import PatchEmbedding
from keras_smallvit.layers import ShiftedPatchTokenization
from tests import references as ref
from tests.contract import LayerContract
from tests.contract import as_numpy


def images(shape=(2, 8, 8, 3), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


class TestPatchEmbeddingContract(LayerContract):
    input_shape = (2, 8, 8, 3)

    def layer_factory(self, dtype):
        return PatchEmbedding(4, 16, dtype=dtype)


class TestShiftedPatchTokenizationContract(LayerContract):
    input_shape = (2, 8, 8, 3)

    def layer_factory(self, dtype):
        return ShiftedPatchTokenization(4, 16, shift_directions="all", dtype=dtype)


class TestShiftedPatchPoolingContract(LayerContract):
    input_shape = (2, 1 + 16, 6)  # class token + a 4x4 token grid

    def layer_factory(self, dtype):
        return ShiftedPatchTokenization(2, 12, num_prefix_tokens=1, dtype=dtype)


def test_patch_embedding_matches_numpy_reference():
    x = images()
    layer = PatchEmbedding(4, 16)
    out = as_numpy(layer(x))
    want = ref.patches(x, 4) @ as_numpy(layer.projection.kernel) + as_numpy(layer.projection.bias)
    np.testing.assert_allclose(out, want, atol=1e-5)


def spt_reference(layer, x, patch, directions, shift):
    features = ref.spt_features(x.astype(np.float64), patch, directions, shift)
    normed = ref.layer_norm(features, as_numpy(layer.layer_norm.gamma), as_numpy(layer.layer_norm.beta))
    return normed @ as_numpy(layer.projection.kernel) + as_numpy(layer.projection.bias)


@pytest.mark.parametrize("directions", ["diagonal", "cardinal", "all"])
@pytest.mark.parametrize("patch,ratio,shift", [(4, 0.5, 2), (4, 0.25, 1), (2, 1.0, 2)])
def test_spt_matches_numpy_reference(directions, patch, ratio, shift):
    x = images()
    layer = ShiftedPatchTokenization(patch, 16, shift_directions=directions, shift_ratio=ratio)
    out = as_numpy(layer(x))
    copies = 1 + len(ref.DIRECTIONS[directions])
    assert layer.projection.kernel.shape == (patch * patch * 3 * copies, 16)
    np.testing.assert_allclose(out, spt_reference(layer, x, patch, directions, shift), atol=1e-4)


def test_spt_left_up_copy_reads_from_the_upper_left():
    # One bright pixel: the first shifted copy (left-up) holds it one shift down-right.
    x = np.zeros((1, 8, 8, 1), "float32")
    x[0, 2, 3, 0] = 1.0
    from keras_smallvit.layers.patching import shift_and_concat

    out = as_numpy(shift_and_concat(x, 2, "diagonal"))
    assert out[0, 4, 5, 1] == 1.0 and out[..., 1].sum() == 1.0


def test_spt_pooling_on_token_sequence_equals_grid_path_plus_prefix_dense():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    class_token = rng.normal(size=(2, 1, 6)).astype("float32")
    sequence = np.concatenate([class_token, grid.reshape(2, 16, 6)], axis=1)
    layer = ShiftedPatchTokenization(2, 12, num_prefix_tokens=1)
    out = as_numpy(layer(sequence))
    assert out.shape == (2, 1 + 4, 12)
    np.testing.assert_allclose(out[:, 1:], spt_reference(layer, grid, 2, "diagonal", 1), atol=1e-4)
    want_cls = class_token @ as_numpy(layer.prefix_projection.kernel) + as_numpy(layer.prefix_projection.bias)
    np.testing.assert_allclose(out[:, :1], want_cls, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"shift_directions": "up"}, "shift_directions"),
        ({"shift_ratio": -0.5}, "shift_ratio"),
        ({"shift_ratio": 0.1}, "shift_ratio"),  # shift rounds to 0 pixels
        ({"patch_size": 0}, "patch_size"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_prefix_tokens": -1}, "num_prefix_tokens"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    args = {"patch_size": 4, "hidden_dim": 8, **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        ShiftedPatchTokenization(**args)


@pytest.mark.parametrize("layer_cls", [PatchEmbedding, ShiftedPatchTokenization])
def test_image_size_not_divisible_by_patch_size_raises(layer_cls):
    with pytest.raises(ValueError, match="`patch_size`"):
        layer_cls(3, 8)(images((1, 8, 8, 3)))
