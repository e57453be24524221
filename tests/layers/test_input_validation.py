"""Inputs that gave a silently wrong result or an unclear backend error now
raise a `ValueError` naming the layer (or `create_model` argument), what was
given and what is allowed (issue 27)."""

import keras
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.layers import AttentionLinkHead
from keras_smallvit.layers import ClassTokenAndPositionEmbedding
from keras_smallvit.layers import ContextBroadcasting
from keras_smallvit.layers import LocalitySelfAttention
from keras_smallvit.layers import MultiHeadSelfAttention
from keras_smallvit.layers import PatchEmbedding
from keras_smallvit.layers import ShiftedPatchTokenization
from keras_smallvit.layers import StochasticDepth
from keras_smallvit.layers import TransformerBlock
from keras_smallvit.layers import TrivialAttentionSuppression
from tests.contract import as_numpy


def zeros(*shape, dtype="float32"):
    return np.zeros(shape, dtype)


def built(layer, *shape):
    """`layer` after one call on zeros of `shape` (built for it)."""
    layer(zeros(*shape))
    return layer


def tiny_model(name):
    return keras_smallvit.create_model(
        name, num_classes=3, image_size=16, depth=1, hidden_dim=16, num_heads=2, head_dim=8
    )


# (id, a function that must raise, a regex the message must match, the given
# shape/value the message must show).
CASES = [
    # Silently wrong before: the qkv reshape folded the extra axis into the batch.
    ("mhsa_rank4", lambda: MultiHeadSelfAttention(2, 8)(zeros(2, 4, 4, 16)),
     r"`inputs` for MultiHeadSelfAttention.*\(batch, tokens, dim\)", "(2, 4, 4, 16)"),
    ("mhsa_rank2", lambda: MultiHeadSelfAttention(2, 8)(zeros(2, 16)),
     r"`inputs` for MultiHeadSelfAttention.*rank-3", "(2, 16)"),
    ("lsa_rank4", lambda: LocalitySelfAttention(2, 8)(zeros(2, 4, 4, 16)),
     r"`inputs` for LocalitySelfAttention.*rank-3", "(2, 4, 4, 16)"),
    # Built for rank 3, then called on rank 4: Keras' check of the built spec.
    ("mhsa_built_then_rank4", lambda: built(MultiHeadSelfAttention(2, 8, name="mhsa"), 1, 5, 16)(zeros(1, 4, 5, 16)),
     r"mhsa.*ndim=3", "(1, 4, 5, 16)"),
    ("block_rank2", lambda: TransformerBlock(2, 8)(zeros(2, 16)),
     r"`inputs` for TransformerBlock.*rank-3", "(2, 16)"),
    ("block_rank4", lambda: TransformerBlock(2, 8)(zeros(2, 4, 4, 16)),
     r"`inputs` for TransformerBlock.*rank-3", "(2, 4, 4, 16)"),
    # Silently wrong before: the "token" mean ran over the features (rank 2)
    # or over the rows of a grid (rank 4).
    ("cb_rank2", lambda: ContextBroadcasting()(zeros(2, 16)),
     r"`inputs` for ContextBroadcasting.*\(batch, tokens, dim\)", "(2, 16)"),
    ("cb_rank4", lambda: ContextBroadcasting()(zeros(2, 4, 4, 16)),
     r"`inputs` for ContextBroadcasting.*rank-3", "(2, 4, 4, 16)"),
    ("cb_built_then_rank2", lambda: built(ContextBroadcasting(name="cb"), 2, 5, 16)(zeros(2, 16)),
     r"cb.*ndim=3", "(2, 16)"),
    ("class_token_rank2", lambda: ClassTokenAndPositionEmbedding()(zeros(2, 16)),
     r"`inputs` for ClassTokenAndPositionEmbedding.*\(batch, tokens, dim\)", "(2, 16)"),
    ("class_token_other_token_count",
     lambda: built(ClassTokenAndPositionEmbedding(name="class_token"), 2, 5, 16)(zeros(2, 6, 16)),
     r"class_token.*\(None, 5, 16\)", "(2, 6, 16)"),
    ("patch_embedding_rank3", lambda: PatchEmbedding(4, 16)(zeros(2, 16, 16)),
     r"`images` for PatchEmbedding.*\(batch, height, width, channels\)", "(2, 16, 16)"),
    ("patch_embedding_channels", lambda: built(PatchEmbedding(4, 16), 1, 16, 16, 3)(zeros(1, 16, 16, 1)),
     r"`images` for PatchEmbedding.*channels = 3.*channels = 1", "(1, 16, 16, 1)"),
    ("spt_rank2", lambda: ShiftedPatchTokenization(4, 16)(zeros(2, 16)),
     r"`inputs` for ShiftedPatchTokenization", "(2, 16)"),
    ("spt_channels", lambda: built(ShiftedPatchTokenization(4, 16), 1, 16, 16, 3)(zeros(1, 16, 16, 1)),
     r"`inputs` for ShiftedPatchTokenization.*channels = 3.*channels = 1", "(1, 16, 16, 1)"),
    # A 1-channel image into 3-channel models: was LayerNormalization's
    # "normalized_shape = [80]" (SPT) or the projection's patch size.
    ("sl_vit_one_channel_image", lambda: tiny_model("sl_vit")(zeros(2, 16, 16, 1)),
     r"ShiftedPatchTokenization.*channels = 3.*channels = 1", "(2, 16, 16, 1)"),
    ("vit_one_channel_image", lambda: tiny_model("vit")(zeros(2, 16, 16, 1)),
     r"PatchEmbedding.*channels = 3.*channels = 1", "(2, 16, 16, 1)"),
    # Was NaN: the keep probability cast to int32 is 0.
    ("stochastic_depth_int_training", lambda: StochasticDepth(0.5)(np.ones((4, 3), "int32"), training=True),
     r"`inputs` for StochasticDepth.*int32.*floating", "int32"),
    ("stochastic_depth_int_inference", lambda: StochasticDepth(0.5)(np.ones((4, 3), "int32")),
     r"`inputs` for StochasticDepth.*int32.*floating", "int32"),
    ("suppression_rank1", lambda: TrivialAttentionSuppression()(zeros(5)),
     r"`attention` for TrivialAttentionSuppression.*\(\.\.\., N_query, N_key\)", "(5,)"),
    ("attention_link_head_rank3", lambda: AttentionLinkHead(4)(zeros(2, 9, 6)),
     r"`inputs` for AttentionLinkHead.*\(batch, height, width, maps\)", "(2, 9, 6)"),
    # create_model: was "'int' object is not iterable".
    ("create_model_techniques_int",
     lambda: keras_smallvit.create_model("vit", num_classes=10, image_size=32, techniques=5),
     r"`techniques`: 5.*'spt', 'lsa', 'sata', 'cb'", "5"),
    # Was an error about `shift_ratio` and a patch size (1, 1) the user never gave.
    ("create_model_sl_vit_image_size_8",
     lambda: keras_smallvit.create_model("sl_vit", num_classes=10, image_size=8),
     r"`image_size` 8 for model 'sl_vit'.*Allowed: image_size a multiple of 8 of at least 16", "8"),
]


@pytest.mark.parametrize("make,pattern,given", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_raises_value_error_naming_the_layer_and_argument(make, pattern, given):
    with pytest.raises(ValueError, match=pattern) as error:
        make()
    assert given in str(error.value)


@pytest.mark.parametrize("image_size,patch_size", [(16, None), (8, 2)])
def test_sl_vit_image_sizes_that_fit_the_shift_still_build(image_size, patch_size):
    # The check refuses only a derived patch size the SPT shift rounds to 0:
    # a given patch size, or an image making patches of 2, builds.
    model = keras_smallvit.create_model(
        "sl_vit", num_classes=3, image_size=image_size, patch_size=patch_size, depth=1, hidden_dim=16, num_heads=2,
        head_dim=8,
    )
    assert model.backbone.patch_size == (2, 2)


def test_valid_shapes_still_pass_the_checks():
    # The checks accept what the layers are for: token sequences with the
    # built size, images with the built channels, float branches.
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    cb = ContextBroadcasting(ratio=0.5)
    np.testing.assert_allclose(
        as_numpy(cb(x)), 0.5 * x + 0.5 * x.mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )
    assert tuple(MultiHeadSelfAttention(2, 8)(x).shape) == (2, 5, 16)
    assert tuple(PatchEmbedding(4, 8)(zeros(1, 16, 16, 1)).shape) == (1, 16, 8)
    kept = as_numpy(StochasticDepth(0.5, seed=1)(x, training=True))
    assert kept.dtype == np.float32
    for sample, original in zip(kept, x):  # each sample dropped (0) or kept and scaled by 1 / 0.5
        assert np.allclose(sample, 0.0) or np.allclose(sample, 2.0 * original, rtol=1e-6)
