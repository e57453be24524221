"""The attention augmentation module of AAL: trainable links from ViT
attention maps to teacher maps (a 1x1 convolution). A layer like the others
(it lives in `layers/`); the rest of AAL, the training-only regularizer,
is `keras_smallvit.aal`, which imports it from here."""

import keras
import numpy as np
from keras import ops

from keras_smallvit.utils.validation import check_input_shape
from keras_smallvit.utils.validation import check_positive_int


def expand_links(links, input_groups, output_groups):
    """The per-map `(num_inputs, num_maps)` 0/1 mask of a link matrix.

    Args:
        links: `(num_blocks, num_layers)` 0/1 matrix.
        input_groups: the ViT layer of every input (attention) map.
        output_groups: the teacher block of every output (teacher) map.
    """
    links = np.asarray(links)
    return links[np.asarray(output_groups)][:, np.asarray(input_groups)].T.astype("float32")



@keras.saving.register_keras_serializable(package="keras_smallvit")
class AttentionLinkHead(keras.layers.Layer):
    """`(B, h, w, num_inputs)` attention maps -> `(B, h, w, num_maps)`
    augmented maps: `A+_c = sum_i w_(i,c) A_i + b_c` (a 1x1 convolution).

    The inputs are the class-token attention maps of every ViT layer and head
    stacked on the last axis; each output map is matched to one teacher
    channel map. Optional selective links: a fixed 0/1 matrix between ViT
    layers and teacher blocks (`links`), with the layer of every input map
    (`input_groups`) and the block of every output map (`output_groups`).
    A masked link is 0 from the start and the mask multiplies the kernel in
    the forward pass, so it gets no gradient and stays exactly 0 under
    (Adam)W updates.

    Args:
        num_maps: output maps `C` (the teacher's channel maps).
        links: None (every input links to every output) or a
            `(num_blocks, num_layers)` 0/1 matrix (nested lists).
        input_groups: with `links`, the ViT layer (column of `links`) of
            every input map.
        output_groups: with `links`, the teacher block (row of `links`) of
            every output map, `num_maps` entries.
        use_bias: add the per-map bias `b_c` (the paper's Eq. 4 has it).
        kernel_initializer: initializer of the links. The default is
            PyTorch's `nn.Conv2d` initialization, `U(-1/sqrt(fan_in),
            1/sqrt(fan_in))` (the paper's framework; it states no init).
        bias_initializer: initializer of the biases.
    """

    def __init__(
        self,
        num_maps,
        links=None,
        input_groups=None,
        output_groups=None,
        use_bias=True,
        kernel_initializer=None,
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_maps = check_positive_int("num_maps", num_maps)
        given = [name for name, v in (("links", links), ("input_groups", input_groups),
                                      ("output_groups", output_groups)) if v is not None]
        if given and len(given) != 3:
            raise ValueError(
                f"Invalid `links`: selective links need `links`, `input_groups` and "
                f"`output_groups` together; got only {given}. Allowed values: all three or none."
            )
        if links is not None:
            matrix = np.asarray(links)
            if matrix.ndim != 2 or not np.isin(matrix, (0, 1)).all():
                raise ValueError(
                    f"Invalid `links`: expected a 2D 0/1 matrix (teacher blocks, ViT layers), got {links!r}."
                )
            if len(output_groups) != self.num_maps:
                raise ValueError(
                    f"Invalid `output_groups`: {len(output_groups)} entries for `num_maps`={self.num_maps}. "
                    "Expected one teacher block per output map."
                )
            for name, groups, size in (("input_groups", input_groups, matrix.shape[1]),
                                       ("output_groups", output_groups, matrix.shape[0])):
                if min(groups) < 0 or max(groups) >= size:
                    raise ValueError(
                        f"Invalid `{name}`: entries must be in [0, {size}) to index `links` "
                        f"of shape {matrix.shape}."
                    )
            links = matrix.astype(int).tolist()
            input_groups = [int(g) for g in input_groups]
            output_groups = [int(g) for g in output_groups]
        self.links = links
        self.input_groups = input_groups
        self.output_groups = output_groups
        self.use_bias = bool(use_bias)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def link_mask(self):
        """The `(num_inputs, num_maps)` 0/1 mask as NumPy, or None (full links)."""
        if self.links is None:
            return None
        return expand_links(self.links, self.input_groups, self.output_groups)

    def build(self, input_shape):
        num_inputs = check_input_shape(self, input_shape, ("batch", "height", "width", "maps"), known=(3,))[-1]
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: num_inputs})
        if self.input_groups is not None and len(self.input_groups) != num_inputs:
            raise ValueError(
                f"Invalid `input_groups`: {len(self.input_groups)} entries for {num_inputs} input "
                "maps. Expected one ViT layer per input map."
            )
        # Conv2D has no weight mask: a 1x1 convolution is a matmul over channels.
        self.kernel = self.add_weight(
            name="kernel", shape=(num_inputs, self.num_maps), initializer=self.kernel_initializer
        )
        self._mask = self.link_mask()
        if self._mask is not None:
            self.kernel.assign(self.kernel * self._mask)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.num_maps,), initializer=self.bias_initializer)

    def link_weights(self):
        """The effective `(num_inputs, num_maps)` links (masked) as NumPy."""
        kernel = ops.convert_to_numpy(self.kernel)
        mask = self.link_mask()
        return kernel if mask is None else kernel * mask

    def call(self, inputs):
        kernel = self.kernel
        if self._mask is not None:
            kernel = kernel * ops.convert_to_tensor(self._mask, dtype=kernel.dtype)
        outputs = ops.matmul(inputs, kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_maps)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_maps=self.num_maps,
            links=self.links,
            input_groups=self.input_groups,
            output_groups=self.output_groups,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
