"""The attention link head: the layer contract, Eq. 4, selective links."""

import keras
import numpy as np
import pytest

from keras_smallvit.aal import AttentionLinkHead
from keras_smallvit.layers import AttentionLinkHead as ExportedHead
from tests.aal import aal_references as ref
from tests.contract import LayerContract
from tests.contract import as_numpy

# 2 ViT layers x 3 heads -> 5 maps of 2 teacher blocks; block 1 links layer 0 only.
LINKS = [[1, 0], [1, 1]]
INPUT_GROUPS = [0, 0, 0, 1, 1, 1]
OUTPUT_GROUPS = [0, 0, 1, 1, 1]


def selective_head(dtype=None):
    return AttentionLinkHead(5, links=LINKS, input_groups=INPUT_GROUPS, output_groups=OUTPUT_GROUPS, dtype=dtype)


class TestContract(LayerContract):
    input_shape = (2, 4, 4, 6)

    def layer_factory(self, dtype):
        return selective_head(dtype)


class TestFullLinksContract(LayerContract):
    input_shape = (2, 3, 3, 6)

    def layer_factory(self, dtype):
        return AttentionLinkHead(4, use_bias=False, dtype=dtype)


def test_is_exported_from_layers():
    assert ExportedHead is AttentionLinkHead


def test_output_is_the_linear_combination_of_eq_4():
    rng = np.random.default_rng(0)
    maps = rng.uniform(size=(2, 4, 4, 6)).astype("float32")
    head = selective_head()
    head.build(maps.shape)
    head.bias.assign(rng.normal(size=(5,)).astype("float32"))
    mask = np.array(LINKS)[OUTPUT_GROUPS][:, INPUT_GROUPS].T
    np.testing.assert_array_equal(head.link_mask(), mask)
    expected = ref.link_head(maps, as_numpy(head.kernel), as_numpy(head.bias), mask)
    np.testing.assert_allclose(as_numpy(head(maps)), expected, atol=1e-5)
    # Masked links start at exactly 0; the default init is PyTorch's Conv2d one.
    kernel = as_numpy(head.kernel)
    assert (kernel[mask == 0] == 0).all() and (kernel[mask == 1] != 0).all()
    assert np.abs(kernel).max() <= 1 / np.sqrt(6)


def test_masked_links_get_no_gradient_and_stay_zero_under_adamw():
    x = np.random.default_rng(1).uniform(size=(4, 4, 4, 6)).astype("float32")
    inputs = keras.Input((4, 4, 6))
    head = selective_head()
    model = keras.Model(inputs, head(inputs))
    before = as_numpy(head.kernel).copy()
    y = np.random.default_rng(2).normal(size=(4, 4, 4, 5)).astype("float32")
    model.compile(keras.optimizers.AdamW(0.1, weight_decay=0.5), "mse")
    model.fit(x, y, batch_size=2, epochs=2, verbose=0)
    after = as_numpy(head.kernel)
    mask = head.link_mask()
    assert (after[mask == 0] == 0.0).all()  # exactly 0, not just small
    assert not np.allclose(after[mask == 1], before[mask == 1])
    np.testing.assert_array_equal(head.link_weights()[mask == 0], 0.0)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="`num_maps`"):
        AttentionLinkHead(0)
    with pytest.raises(ValueError, match="`links`"):
        AttentionLinkHead(5, links=LINKS)  # groups missing
    with pytest.raises(ValueError, match="`links`"):
        AttentionLinkHead(5, links=[[2, 0], [0, 1]], input_groups=INPUT_GROUPS, output_groups=OUTPUT_GROUPS)
    with pytest.raises(ValueError, match="`output_groups`"):
        AttentionLinkHead(4, links=LINKS, input_groups=INPUT_GROUPS, output_groups=OUTPUT_GROUPS)
    with pytest.raises(ValueError, match="`input_groups`"):
        AttentionLinkHead(5, links=LINKS, input_groups=[0, 0, 0, 1, 1, 2], output_groups=OUTPUT_GROUPS)
    with pytest.raises(ValueError, match="`input_groups`"):
        selective_head()(np.zeros((1, 2, 2, 4), "float32"))  # 4 maps, 6 groups
