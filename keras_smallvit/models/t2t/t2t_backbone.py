"""T2T-ViT backbone for small datasets; the techniques come as one `TechniqueSpec`."""

import keras

from keras_smallvit.models.backbone import Backbone
from keras_smallvit.models.backbone import call_block
from keras_smallvit.models.backbone import make_embedding_dropout
from keras_smallvit.models.backbone import resolve_techniques
from keras_smallvit.models.attention_maps import class_token_attention
from keras_smallvit.models.t2t.t2t_layers import ClassTokenAndSinusoidalPositionEmbedding
from keras_smallvit.models.t2t.t2t_layers import PatchShifting
from keras_smallvit.models.t2t.t2t_layers import SoftSplit
from keras_smallvit.models.t2t.t2t_layers import T2TBlock
from keras_smallvit.models.t2t.t2t_layers import TokenTransformer
from keras_smallvit.models.t2t.t2t_layers import official_drop_path_rates
from keras_smallvit.models.t2t.t2t_layers import soft_split_output_size
from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

SOFT_SPLIT = (3, 2, 1)
NUM_TOKENS_PER_SIDE = 8


def default_soft_splits(image_size):
    """The official stride-2 soft splits down to an 8x8 grid: two at 32 px,
    three at 64 px."""
    height, width = as_pair("image_size", image_size)
    if height != width or height % NUM_TOKENS_PER_SIDE or height < 2 * NUM_TOKENS_PER_SIDE:
        ratio = None
    else:
        ratio = height // NUM_TOKENS_PER_SIDE
    if ratio is None or ratio & (ratio - 1):
        raise ValueError(
            f"Invalid `image_size` {image_size}: the default soft splits halve a "
            f"square image down to {NUM_TOKENS_PER_SIDE}x{NUM_TOKENS_PER_SIDE}, so it "
            "must be 8 times a power of two, at least 16 (e.g. 32 or 64); or pass `soft_splits`."
        )
    return (SOFT_SPLIT,) * (ratio.bit_length() - 1)


def soft_splits_config(soft_splits):
    """Validates `soft_splits` and returns it as a tuple of `(kernel, stride, padding)`."""
    message = (
        f"Invalid `soft_splits`: {soft_splits!r}. Expected a non-empty list of "
        "(kernel_size, stride, padding) triples of integers (kernel, stride >= 1, padding >= 0)."
    )
    if not isinstance(soft_splits, (list, tuple)) or not soft_splits:
        raise ValueError(message)
    result = []
    for split in soft_splits:
        if not isinstance(split, (list, tuple)) or len(split) != 3:
            raise ValueError(message)
        kernel, stride, padding = split
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in split)
        if not ints or kernel < 1 or stride < 1 or padding < 0:
            raise ValueError(message)
        result.append((kernel, stride, padding))
    return tuple(result)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class T2TBackbone(Backbone):
    """T2T-ViT backbone (Yuan et al. 2021), as in the small-dataset papers' code.

    Tokens-to-token module: images `(B, H, W, C)` -> (SPT shifting) -> soft
    split 1 -> [token transformer -> tokens back on their grid -> soft split
    i] for each further soft split -> Dense to `hidden_dim` (optionally after
    a LayerNorm). Then a learned class token and a fixed sinusoid position
    table, embedding dropout, and `depth` pre-norm `T2TBlock`s. No final
    LayerNorm: the classifier head (LayerNorm + Dense on the class token) is
    the official one. Stochastic depth grows linearly from 0 in the first
    block to `drop_path_rate` in the last (official code).

    The official small-dataset config (T2T-14 small): `soft_splits` of
    `(kernel 3, stride 2, padding 1)`, two at 32 px and three at 64 px (8x8
    tokens), token transformers with one head, `token_dim` 64 and MLP ratio 1
    (the standard-transformer T2T, not the Performer one), embed 256, depth
    12, 4 heads of 64, MLP ratio 2.

    Differences from the official code, both switchable:
    - `attention_input_residual=True` reproduces the official blocks, whose
      attention branch is `LN(x) + Proj(A v)` (the official file defines two
      attention classes with one name; the blocks get the token-attention
      one). False gives the standard T2T-ViT block.
    - `projection_norm`: the official T2T module creates a LayerNorm over the
      last soft split's tokens but never calls it, so its `2 * token_dim * k
      * k` parameters (1,152) are in the official count and not in ours by
      default. `projection_norm=True` applies such a LayerNorm before the
      projection (that count, another forward pass).

    Outputs a dict:
    - `"sequence_output"`: `(B, 1 + N, hidden_dim)`, class token first;
    - `"attention_maps"`: a list of float32 probabilities from the same
      forward pass: one `(B, token_num_heads, N_i, N_i)` per token
      transformer, then one `(B, num_heads, 1 + N, 1 + N)` per block.
      `class_token_attention()` turns the blocks' maps into class-token maps
      on the final token grid.

    Where the techniques (`techniques`, a `TechniqueSpec`; its plain
    tokenizer is `"soft_split"`) act:
    - SPT: the image and its shifted copies (the spec's directions, shift
      `int(first stride * shift_ratio)`, 1 pixel) are concatenated on
      the channel axis before the first soft split (official code); the soft
      split and token transformer that follow do the patching.
    - LSA: diagonal mask and learned per-head temperature
      in every attention layer, token transformers included (official code).
      The token transformers' temperature starts at the official
      `(input size) ** -0.5`, the blocks' at `head_dim ** -0.5`.
    - SATA: on the softmax probabilities, before `A @ V`, in
      every attention layer: token transformers and blocks.
    - Block techniques (CB): in the `depth` blocks (CB's mean includes the
      class token). Not in the token transformers, which re-tokenize the image.

    Args:
        image_size: int or `(height, width)`.
        num_channels: input channels.
        hidden_dim: token size of the blocks (256).
        depth: number of blocks (12).
        num_heads: attention heads of the blocks (4).
        head_dim: size of each head (64).
        mlp_ratio: MLP hidden size / hidden_dim (2).
        token_dim: token size inside the T2T module (64).
        soft_splits: `(kernel_size, stride, padding)` of each soft split, in
            order (one token transformer between two soft splits).
        token_num_heads: heads of the token transformers (1).
        token_mlp_ratio: MLP ratio of the token transformers (1).
        techniques: a `TechniqueSpec` (see `ViTBackbone`).
        attention_input_residual: the official blocks' extra skip (see above).
        projection_norm: LayerNorm before the projection (see above).
        drop_path_rate: stochastic depth rate of the last block.
        dropout: dropout in attention projections and MLPs.
        embedding_dropout: dropout after the position embedding.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon.
        seed: seed of the drop-path randomness.
        dtype: dtype policy of every layer (e.g. `"mixed_bfloat16"`).
    """

    def __init__(
        self,
        image_size=32,
        num_channels=3,
        hidden_dim=256,
        depth=12,
        num_heads=4,
        head_dim=64,
        mlp_ratio=2.0,
        token_dim=64,
        soft_splits=((3, 2, 1), (3, 2, 1)),
        token_num_heads=1,
        token_mlp_ratio=1.0,
        techniques=None,
        attention_input_residual=True,
        projection_norm=False,
        drop_path_rate=0.0,
        dropout=0.0,
        embedding_dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-5,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        # Validate everything up front so errors name the backbone argument.
        techniques = resolve_techniques(techniques, kwargs, plain_tokenizer="soft_split", owner=type(self))
        image_hw = as_pair("image_size", image_size)
        check_positive_int("num_channels", num_channels)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("depth", depth)
        check_positive_int("token_dim", token_dim)
        soft_splits = soft_splits_config(soft_splits)
        check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_inclusive=False)
        grid = image_hw
        for kernel, stride, padding in soft_splits:
            grid = tuple(soft_split_output_size(s, kernel, stride, padding) for s in grid)
            if min(grid) < 1:
                raise ValueError(
                    f"Invalid `soft_splits` {soft_splits} for `image_size` {image_hw}: "
                    "the token grid shrinks to nothing. Use fewer soft splits or smaller kernels."
                )
        shift = int(soft_splits[0][1] * techniques.shift_ratio)
        if techniques.spt and shift < 1:
            raise ValueError(
                f"Invalid `shift_ratio` {techniques.shift_ratio}: the SPT shift int(stride * shift_ratio) "
                f"with the first soft split's stride {soft_splits[0][1]} is 0. "
                f"Allowed: shift_ratio >= {1 / soft_splits[0][1]}."
            )

        # === Layers ===
        shifting = None
        if techniques.spt:
            shifting = PatchShifting(shift, techniques.shift_directions, dtype=dtype, name="patch_shifting")
        splits = [
            SoftSplit(kernel, stride, padding, dtype=dtype, name=f"soft_split_{i}")
            for i, (kernel, stride, padding) in enumerate(soft_splits)
        ]
        token_transformers = [
            TokenTransformer(
                token_dim=token_dim,
                num_heads=token_num_heads,
                mlp_ratio=token_mlp_ratio,
                techniques=techniques,
                dropout=dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"token_transformer_{i}",
            )
            for i in range(len(soft_splits) - 1)
        ]
        norm = None
        if projection_norm:
            norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="projection_norm")
        projection = keras.layers.Dense(hidden_dim, dtype=dtype, name="projection")
        embedding = ClassTokenAndSinusoidalPositionEmbedding(dtype=dtype, name="embedding")
        embedding_dropout_layer = make_embedding_dropout(embedding_dropout, dtype)
        blocks = [
            T2TBlock(
                num_heads=num_heads,
                head_dim=head_dim,
                attention_input_residual=attention_input_residual,
                mlp_ratio=mlp_ratio,
                techniques=techniques,
                drop_path_rate=rate,
                dropout=dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                seed=None if seed is None else seed + i,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i, rate in enumerate(official_drop_path_rates(drop_path_rate, depth))
        ]

        # === Functional model ===
        images = keras.Input(shape=(*image_hw, num_channels), name="images")
        x = images if shifting is None else shifting(images)
        x = splits[0](x)
        attention_maps = []
        stage_grid = image_hw
        for i, transformer in enumerate(token_transformers):
            kernel, stride, padding = soft_splits[i]
            stage_grid = tuple(soft_split_output_size(s, kernel, stride, padding) for s in stage_grid)
            x = call_block(transformer, x, attention_maps)
            # Tokens back on their grid (row-major, as they were split).
            x = keras.layers.Reshape((*stage_grid, token_dim), dtype=dtype, name=f"token_grid_{i}")(x)
            x = splits[i + 1](x)
        if norm is not None:
            x = norm(x)
        x = embedding_dropout_layer(embedding(projection(x)))
        for block in blocks:
            x = call_block(block, x, attention_maps)
        super().__init__(
            inputs=images,
            outputs={"sequence_output": x, "attention_maps": attention_maps},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.grid_size = grid
        self.num_prefix_tokens = 1
        self.set_config(
            image_size=image_hw,
            num_channels=num_channels,
            hidden_dim=hidden_dim,
            depth=depth,
            num_heads=num_heads,
            head_dim=head_dim,
            mlp_ratio=mlp_ratio,
            token_dim=token_dim,
            soft_splits=soft_splits,
            token_num_heads=token_num_heads,
            token_mlp_ratio=token_mlp_ratio,
            techniques=techniques,
            attention_input_residual=bool(attention_input_residual),
            projection_norm=bool(projection_norm),
            drop_path_rate=drop_path_rate,
            dropout=dropout,
            embedding_dropout=embedding_dropout,
            attention_dropout=attention_dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            seed=seed,
        )

    def class_token_attention(self, attention_maps):
        """Class-token rows of the blocks' maps on the final token grid: a list
        of `depth` tensors `(B, num_heads, grid_h, grid_w)` (the token
        transformers' maps, which have no class token, are left out)."""
        block_maps = list(attention_maps)[-self.depth :]
        return class_token_attention(block_maps, self.grid_size, self.num_prefix_tokens)
