"""Swin Transformer backbone for small datasets; the techniques come as one `TechniqueSpec`."""

import keras

from keras_smallvit.models.backbone import Backbone
from keras_smallvit.models.backbone import call_block
from keras_smallvit.models.backbone import check_image_and_patch_size
from keras_smallvit.models.backbone import make_embedding_dropout
from keras_smallvit.models.backbone import resolve_techniques
from keras_smallvit.models.backbone import stage_tuple
from keras_smallvit.models.swin.swin_layers import AbsolutePositionEmbedding
from keras_smallvit.models.swin.swin_layers import PatchMerging
from keras_smallvit.models.swin.swin_layers import SwinTransformerBlock
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

SWIN_DOWNSAMPLING = ("patch_merging", "spt")


def stage_windows(grid_size, window_size):
    """`(window, shift)` of a stage, the official rule: a grid no larger than
    the window gets one window of the grid's size and no shift."""
    smallest = min(grid_size)
    if smallest <= window_size:
        return smallest, 0
    return window_size, window_size // 2


@keras.saving.register_keras_serializable(package="keras_smallvit")
class SwinBackbone(Backbone):
    """Swin Transformer backbone (functional), the small-dataset config of the official code.

    images `(B, H, W, C)` -> tokenizer (`hidden_dim`; the plain patch
    embedding is followed by a LayerNorm, SPT brings its own) -> learned
    absolute position embedding -> embedding dropout -> stages of
    `SwinTransformerBlock`s (even blocks: window attention; odd blocks:
    windows shifted by `window_size // 2`; a stage whose grid is no larger
    than the window gets a single unshifted window of the grid's size); after
    every stage but the last, a downsampling layer halves the grid and
    doubles the width. There is no class token and no final LayerNorm: the
    classifier head (LayerNorm on every token, average, Dense; `ImageClassifier`
    with `pooling="average", norm_before_pooling=True`) brings it, like the
    official code. Stochastic depth grows linearly from 0 to
    `drop_path_rate` over the blocks (official code).

    Outputs a dict:
    - `"sequence_output"`: `(B, N_last, hidden_dim * 2 ** (stages - 1))`;
    - `"attention_maps"`: one `(B, num_windows, heads, ws * ws, ws * ws)`
      float32 tensor per block (after the shift mask, LSA masking and SATA),
      from the same forward pass. There is no class token:
      `class_token_attention()` returns None.

    Where the techniques (`techniques`, a `TechniqueSpec`) act:
    - SPT tokenizes the image; `downsampling="spt"` (the default with SPT)
      replaces patch merging by `ShiftedPatchTokenization` on the token grid
      (2x2 merging, shift of 1 cell, the spec's directions).
    - LSA: in every window of every block, the diagonal mask and a learned
      per-head temperature (scaling q), with the relative position bias and
      the shift mask.
    - SATA: on the probabilities of every window row of every block, one
      scale `s` per block shared by heads and windows.
    - Block techniques (CB): in every block; CB's mean runs over all tokens
      of the image (not per window). Downsampling layers are untouched.

    Args:
        image_size: int or `(height, width)`.
        patch_size: int or `(height, width)`; must divide `image_size`.
        num_channels: input channels.
        hidden_dim: width of the first stage (96); doubled by each downsampling.
        depths: blocks per stage ((2, 6, 4)).
        num_heads: heads per stage, an int or one per stage ((3, 6, 12));
            each must divide its stage's width.
        window_size: window side (4).
        mlp_ratio: MLP hidden size / stage width (2).
        downsampling: `"patch_merging"`, `"spt"`, or None for `"spt"` with
            the SPT tokenizer and `"patch_merging"` otherwise
            (`"patch_merging"` with SPT: SPT at the input only, the SPT/LSA
            paper's "SL-Swin w/o S_pool", registered as `sl_swin_no_spool`).
        techniques: a `TechniqueSpec` (see `ViTBackbone`).
        drop_path_rate: stochastic depth rate of the last block.
        dropout: dropout in attention projections and MLPs.
        embedding_dropout: dropout after the position embedding.
        attention_dropout: dropout on attention probabilities.
        use_qkv_bias: bias in the qkv projections (True, as in Swin).
        absolute_position_embedding: the learned position embedding after
            the tokenizer (True: the small-dataset code; False: Swin's
            ImageNet models, `ape=False`).
        layer_norm_epsilon: LayerNorm epsilon.
        seed: seed of the drop-path randomness.
        dtype: dtype policy of every layer.
    """

    def __init__(
        self,
        image_size=32,
        patch_size=2,
        num_channels=3,
        hidden_dim=96,
        depths=(2, 6, 4),
        num_heads=(3, 6, 12),
        window_size=4,
        mlp_ratio=2.0,
        downsampling=None,
        techniques=None,
        drop_path_rate=0.0,
        dropout=0.0,
        embedding_dropout=0.0,
        attention_dropout=0.0,
        use_qkv_bias=True,
        absolute_position_embedding=True,
        layer_norm_epsilon=1e-5,
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
        check_positive_int("window_size", window_size)
        if downsampling is None:
            downsampling = "spt" if techniques.spt else "patch_merging"
        check_choice("downsampling", downsampling, SWIN_DOWNSAMPLING)
        check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_inclusive=False)

        grid = (image_hw[0] // patch_hw[0], image_hw[1] // patch_hw[1])
        stage_grids = []
        for stage in range(len(depths)):
            if stage:
                if grid[0] % 2 or grid[1] % 2 or (downsampling == "spt" and grid[0] != grid[1]):
                    raise ValueError(
                        f"Invalid `image_size` {image_size} / `patch_size` {patch_size}: the "
                        f"token grid {grid} before downsampling stage {stage} must have even "
                        f"sides{' and be square (downsampling=spt)' if downsampling == 'spt' else ''}."
                    )
                grid = (grid[0] // 2, grid[1] // 2)
            window, _ = stage_windows(grid, window_size)
            if grid[0] % window or grid[1] % window:
                raise ValueError(
                    f"Invalid `window_size` {window_size} for the stage-{stage} token grid "
                    f"{grid}: the window must divide the grid."
                )
            dim = hidden_dim * 2**stage
            if dim % num_heads[stage]:
                raise ValueError(
                    f"Invalid `num_heads` {num_heads}: the stage-{stage} width {dim} is not "
                    f"divisible by {num_heads[stage]} heads. Allowed: divisors of each stage's width."
                )
            stage_grids.append(grid)

        # === Layers ===
        tokenizer = techniques.make_tokenizer(patch_hw, hidden_dim, layer_norm_epsilon=layer_norm_epsilon, dtype=dtype)
        tokenizer_norm = None
        if not techniques.spt:  # SPT brings its own LayerNorm
            tokenizer_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=dtype, name="tokenizer_norm"
            )
        if not isinstance(absolute_position_embedding, bool):
            raise ValueError(
                f"Invalid `absolute_position_embedding` {absolute_position_embedding!r}. Allowed values: True, False."
            )
        position_embedding = None
        if absolute_position_embedding:
            position_embedding = AbsolutePositionEmbedding(dtype=dtype, name="position_embedding")
        embedding_dropout_layer = make_embedding_dropout(embedding_dropout, dtype)
        total_blocks = sum(depths)
        # torch.linspace(0, rate, total) of the official code.
        drop_path_rates = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        stages, downsamplings = [], []
        block_index = 0
        for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = hidden_dim * 2**stage
            window, shift = stage_windows(stage_grids[stage], window_size)
            blocks = []
            for i in range(depth):
                blocks.append(
                    SwinTransformerBlock(
                        num_heads=heads,
                        head_dim=dim // heads,
                        window_size=window,
                        shift_size=shift if i % 2 else 0,
                        grid_size=stage_grids[stage],
                        use_qkv_bias=use_qkv_bias,
                        mlp_ratio=mlp_ratio,
                        techniques=techniques,
                        drop_path_rate=drop_path_rates[block_index],
                        dropout=dropout,
                        attention_dropout=attention_dropout,
                        layer_norm_epsilon=layer_norm_epsilon,
                        seed=None if seed is None else seed + block_index,
                        dtype=dtype,
                        name=f"stage_{stage}_block_{i}",
                    )
                )
                block_index += 1
            stages.append(blocks)
            if stage < len(depths) - 1:
                if downsampling == "spt":
                    layer = techniques.make_spt_pooling(
                        2 * dim, layer_norm_epsilon=layer_norm_epsilon, dtype=dtype, name=f"downsampling_{stage}"
                    )
                else:
                    layer = PatchMerging(
                        2 * dim,
                        grid_size=stage_grids[stage],
                        layer_norm_epsilon=layer_norm_epsilon,
                        dtype=dtype,
                        name=f"downsampling_{stage}",
                    )
                downsamplings.append(layer)

        # === Functional model ===
        images = keras.Input(shape=(*image_hw, num_channels), name="images")
        x = tokenizer(images)
        if tokenizer_norm is not None:
            x = tokenizer_norm(x)
        if position_embedding is not None:
            x = position_embedding(x)
        x = embedding_dropout_layer(x)
        attention_maps = []
        for stage, blocks in enumerate(stages):
            for block in blocks:
                x = call_block(block, x, attention_maps)
            if stage < len(downsamplings):
                x = downsamplings[stage](x)
        super().__init__(
            inputs=images,
            outputs={"sequence_output": x, "attention_maps": attention_maps},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.grid_size = stage_grids[0]
        self.stage_grid_sizes = tuple(stage_grids)
        self.num_prefix_tokens = 0
        self.set_config(
            image_size=image_hw,
            patch_size=patch_hw,
            num_channels=num_channels,
            hidden_dim=hidden_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            downsampling=downsampling,
            techniques=techniques,
            drop_path_rate=drop_path_rate,
            dropout=dropout,
            embedding_dropout=embedding_dropout,
            attention_dropout=attention_dropout,
            use_qkv_bias=use_qkv_bias,
            absolute_position_embedding=absolute_position_embedding,
            layer_norm_epsilon=layer_norm_epsilon,
            seed=seed,
        )

    def class_token_attention(self, attention_maps):
        """None: Swin has no class token (its maps are per window)."""
        return None
