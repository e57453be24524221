"""PiT (pooling-based vision transformer) backbone for small datasets; the techniques come as one `TechniqueSpec`."""

import keras

from keras_smallvit.models.backbone import Backbone
from keras_smallvit.models.backbone import call_block
from keras_smallvit.models.backbone import check_image_and_patch_size
from keras_smallvit.models.backbone import make_embedding_dropout
from keras_smallvit.models.backbone import resolve_techniques
from keras_smallvit.models.backbone import stage_tuple
from keras_smallvit.layers.embedding import ClassTokenAndPositionEmbedding
from keras_smallvit.layers.transformer_block import TransformerBlock
from keras_smallvit.models.attention_maps import class_token_attention
from keras_smallvit.models.pit.pit_layers import DepthwiseConvPooling
from keras_smallvit.models.pit.pit_layers import conv_pooling_grid
from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int

PIT_DOWNSAMPLING = ("conv", "spt")


def overlapping_patch_embedding(patch_size, strides, grid, hidden_dim, dtype):
    """The ImageNet PiT's `conv_embedding`: a convolution of kernel
    `patch_size` and stride `strides`, no padding, with bias, flattened to
    `(B, grid_h * grid_w, hidden_dim)` tokens."""
    convolution = keras.layers.Conv2D(
        hidden_dim, patch_size, strides=strides, padding="valid", dtype=dtype, name="patch_embedding"
    )
    flatten = keras.layers.Reshape((grid[0] * grid[1], hidden_dim), dtype=dtype, name="patch_tokens")
    return lambda images: flatten(convolution(images))


@keras.saving.register_keras_serializable(package="keras_smallvit")
class PiTBackbone(Backbone):
    """PiT backbone (functional), the small-dataset config of the official code.

    images `(B, H, W, C)` -> tokenizer (`hidden_dim`) -> class token + learned
    position embedding -> embedding dropout -> stages of pre-norm
    `TransformerBlock`s; between stages a pooling layer halves the token grid
    and doubles the width (`hidden_dim * 2 ** stage`). There is no final
    LayerNorm: the classifier head (LayerNorm + Dense on the class token)
    brings its own, like the official code. Stochastic depth uses the same
    rate in every block (official code).

    Outputs a dict:
    - `"sequence_output"`: `(B, 1 + N_last, hidden_dim * 2 ** (stages - 1))`,
      class token first;
    - `"attention_maps"`: one `(B, heads_s, 1 + N_s, 1 + N_s)` float32 tensor
      per block (after LSA masking and SATA), from the same forward pass;
      `class_token_attention()` puts the class-token rows on each stage's grid.

    Where the techniques (`techniques`, a `TechniqueSpec`) act:
    - SPT tokenizes the image; `downsampling="spt"` (S_pool; the default
      with SPT) replaces the pooling layers by `ShiftedPatchTokenization` on
      the token grid (2x2 merging, shift of 1 cell, the spec's
      directions), the class token through its own Dense.
    - LSA and SATA: in every block's attention (the diagonal mask includes
      the class token; one SATA scale `s` per block).
    - Block techniques (CB): in every block; CB's mean runs over all tokens
      of that stage, class token included. Pooling layers are untouched.

    Args:
        image_size: int or `(height, width)`.
        patch_size: int or `(height, width)`; must divide `image_size`.
        patch_stride: int or `(height, width)`, the stride of the plain
            tokenizer, or None for `patch_size` (non-overlapping patches).
            A smaller stride makes overlapping patches (a convolution with
            no padding, the ImageNet PiT's: patch 16, stride 8 at 224 px
            gives a 27x27 grid). The SPT tokenizer always takes
            non-overlapping `patch_size` patches (this stride is the plain
            tokenizer's only).
        pooling_pointwise: the 1x1 Dense after each depthwise pooling
            convolution (True: the small-dataset code; False: the ImageNet
            PiT's `conv_head_pooling`, see `DepthwiseConvPooling`).
        num_channels: input channels.
        hidden_dim: width of the first stage (96); doubled by each pooling.
        depths: blocks per stage ((2, 6, 4)).
        num_heads: heads per stage, an int or one per stage ((2, 4, 8)).
        head_dim: size of each head in every stage (48).
        mlp_ratio: MLP hidden size / stage width (2).
        downsampling: `"conv"` (depthwise convolution, stride 2), `"spt"`, or
            None for `"spt"` with the SPT tokenizer and `"conv"` otherwise
            (`"conv"` with SPT: SPT at the input only, the SPT/LSA paper's
            "SL-PiT w/o S_pool", registered as `sl_pit_no_spool`).
        techniques: a `TechniqueSpec` (see `ViTBackbone`).
        drop_path_rate: stochastic depth rate.
        dropout: dropout in attention projections and MLPs.
        embedding_dropout: dropout after the position embedding.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon.
        embedding_initializer_stddev: the std of the normal the class token
            and the position embedding start from (1.0: `torch.randn`, the
            small-dataset code; 0.02: the ImageNet code's `trunc_normal_`).
        use_qkv_bias: bias in the qkv projections (False in the
            small-dataset code; True in the ImageNet PiT).
        seed: seed of the drop-path randomness.
        dtype: dtype policy of every layer.
    """

    def __init__(
        self,
        image_size=32,
        patch_size=2,
        patch_stride=None,
        pooling_pointwise=True,
        num_channels=3,
        hidden_dim=96,
        depths=(2, 6, 4),
        num_heads=(2, 4, 8),
        head_dim=48,
        mlp_ratio=2.0,
        downsampling=None,
        techniques=None,
        drop_path_rate=0.0,
        dropout=0.0,
        embedding_dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-5,
        embedding_initializer_stddev=1.0,
        use_qkv_bias=False,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        # === Validation (errors name the backbone argument) ===
        techniques = resolve_techniques(techniques, kwargs, owner=type(self))
        image_hw, patch_hw = check_image_and_patch_size(image_size, patch_size)
        check_positive_int("num_channels", num_channels)
        check_positive_int("hidden_dim", hidden_dim)
        depths = stage_tuple("depths", depths)
        num_heads = stage_tuple("num_heads", num_heads, len(depths))
        if downsampling is None:
            downsampling = "spt" if techniques.spt else "conv"
        check_choice("downsampling", downsampling, PIT_DOWNSAMPLING)
        stride_hw = patch_hw if patch_stride is None else as_pair("patch_stride", patch_stride)
        for axis, stride, patch in zip(("height", "width"), stride_hw, patch_hw):
            if stride > patch:
                raise ValueError(
                    f"Invalid `patch_stride` {patch_stride} ({axis} {stride}): larger than `patch_size` "
                    f"{patch_size} (pixels would be skipped). Allowed: 1 to {patch}, or None."
                )
        if not isinstance(pooling_pointwise, bool):
            raise ValueError(f"Invalid `pooling_pointwise` {pooling_pointwise!r}. Allowed values: True, False.")
        overlapping = stride_hw != patch_hw and not techniques.spt
        if overlapping:
            grid = tuple((size - patch) // stride + 1 for size, patch, stride in zip(image_hw, patch_hw, stride_hw))
        else:
            grid = (image_hw[0] // patch_hw[0], image_hw[1] // patch_hw[1])
        stage_grids = [grid]
        for _ in depths[1:]:
            if downsampling == "spt" and (grid[0] != grid[1] or grid[0] % 2):
                raise ValueError(
                    f"Invalid `image_size` {image_size} / `patch_size` {patch_size} for "
                    f"downsampling='spt': the token grid {grid} of a pooled stage must be "
                    "square with an even side. Allowed: such sizes, or downsampling='conv'."
                )
            grid = (grid[0] // 2, grid[1] // 2) if downsampling == "spt" else conv_pooling_grid(grid)
            stage_grids.append(grid)

        # === Layers ===
        if overlapping:
            tokenizer = overlapping_patch_embedding(patch_hw, stride_hw, stage_grids[0], hidden_dim, dtype)
        else:
            tokenizer = techniques.make_tokenizer(
                patch_hw, hidden_dim, layer_norm_epsilon=layer_norm_epsilon, dtype=dtype
            )
        embedding = ClassTokenAndPositionEmbedding(embedding_initializer_stddev, dtype=dtype, name="embedding")
        embedding_dropout_layer = make_embedding_dropout(embedding_dropout, dtype)
        stages, poolings = [], []
        block_index = 0
        for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = hidden_dim * 2**stage
            blocks = []
            for i in range(depth):
                blocks.append(
                    TransformerBlock(
                        num_heads=heads,
                        head_dim=head_dim,
                        mlp_ratio=mlp_ratio,
                        techniques=techniques,
                        drop_path_rate=drop_path_rate,
                        dropout=dropout,
                        attention_dropout=attention_dropout,
                        layer_norm_epsilon=layer_norm_epsilon,
                        use_qkv_bias=use_qkv_bias,
                        seed=None if seed is None else seed + block_index,
                        dtype=dtype,
                        name=f"stage_{stage}_block_{i}",
                    )
                )
                block_index += 1
            stages.append(blocks)
            if stage < len(depths) - 1:
                if downsampling == "spt":
                    pooling = techniques.make_spt_pooling(
                        2 * dim, num_prefix_tokens=1, layer_norm_epsilon=layer_norm_epsilon, dtype=dtype,
                        name=f"pooling_{stage}",
                    )
                else:
                    pooling = DepthwiseConvPooling(
                        2 * dim,
                        grid_size=stage_grids[stage],
                        num_prefix_tokens=1,
                        pointwise=pooling_pointwise,
                        dtype=dtype,
                        name=f"pooling_{stage}",
                    )
                poolings.append(pooling)

        # === Functional model ===
        images = keras.Input(shape=(*image_hw, num_channels), name="images")
        x = embedding_dropout_layer(embedding(tokenizer(images)))
        attention_maps = []
        for stage, blocks in enumerate(stages):
            for block in blocks:
                x = call_block(block, x, attention_maps)
            if stage < len(poolings):
                x = poolings[stage](x)
        super().__init__(
            inputs=images,
            outputs={"sequence_output": x, "attention_maps": attention_maps},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.grid_size = stage_grids[0]
        self.stage_grid_sizes = tuple(stage_grids)
        self.num_prefix_tokens = 1
        self.set_config(
            image_size=image_hw,
            patch_size=patch_hw,
            patch_stride=None if patch_stride is None else stride_hw,
            pooling_pointwise=pooling_pointwise,
            num_channels=num_channels,
            hidden_dim=hidden_dim,
            depths=depths,
            num_heads=num_heads,
            head_dim=head_dim,
            mlp_ratio=mlp_ratio,
            downsampling=downsampling,
            techniques=techniques,
            drop_path_rate=drop_path_rate,
            dropout=dropout,
            embedding_dropout=embedding_dropout,
            attention_dropout=attention_dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            embedding_initializer_stddev=embedding_initializer_stddev,
            use_qkv_bias=bool(use_qkv_bias),
            seed=seed,
        )

    def class_token_attention(self, attention_maps):
        """Class-token rows of `attention_maps` on each map's own stage grid: a
        list of `(B, heads_s, grid_h_s, grid_w_s)` (one tensor for one map)."""
        grids = {h * w + self.num_prefix_tokens: (h, w) for h, w in self.stage_grid_sizes}
        if isinstance(attention_maps, (list, tuple)):
            return [self.class_token_attention(m) for m in attention_maps]
        return class_token_attention(attention_maps, grids[attention_maps.shape[-1]], self.num_prefix_tokens)
