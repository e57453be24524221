"""ViT backbone for small datasets, with SPT, LSA, SATA and CB as options."""

import keras

from keras_smallvit.layers.attention import suppression_config
from keras_smallvit.layers.embedding import ClassTokenAndPositionEmbedding
from keras_smallvit.layers.patching import SHIFT_DIRECTIONS
from keras_smallvit.layers.patching import PatchEmbedding
from keras_smallvit.layers.patching import ShiftedPatchTokenization
from keras_smallvit.layers.transformer_block import ATTENTION_TYPES
from keras_smallvit.layers.transformer_block import CONTEXT_BROADCASTING_POSITIONS
from keras_smallvit.layers.transformer_block import TransformerBlock
from keras_smallvit.layers.transformer_block import context_broadcasting_config
from keras_smallvit.models.attention_maps import class_token_attention
from keras_smallvit.utils.validation import as_pair
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_divisible
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

TOKENIZERS = ("patch", "spt")


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ViTBackbone(keras.Model):
    """Vision Transformer backbone (functional), as in the small-dataset papers.

    images `(B, H, W, C)` -> tokenizer -> class token + position embedding ->
    embedding dropout -> `depth` pre-norm `TransformerBlock`s. There is no
    final LayerNorm: the classifier head brings its own, like the official
    code. Stochastic depth uses the same rate in every block (official code).

    Outputs a dict:
    - `"sequence_output"`: `(B, 1 + N, hidden_dim)`, class token first;
    - `"attention_maps"`: a list with one `(B, num_heads, 1 + N, 1 + N)`
      float32 tensor per block (after LSA masking and SATA), from the same
      forward pass. `class_token_attention()` turns them into class-token maps
      on the patch grid.

    The techniques:
    - SPT: `tokenizer="spt"` (shifted patch tokenization; `shift_directions`,
      `shift_ratio`);
    - LSA: `attention="lsa"` (diagonal mask + learned per-head temperature);
    - SATA: `suppression=True` or a dict of `TrivialAttentionSuppression`
      arguments, applied in every block;
    - CB: `context_broadcasting=True` or a dict of `ContextBroadcasting`
      arguments, at `context_broadcasting_position` in every block.

    Args:
        image_size: int or `(height, width)`.
        patch_size: int or `(height, width)`; must divide `image_size`.
        num_channels: input channels.
        hidden_dim: token size (192).
        depth: number of blocks (9).
        num_heads: attention heads (12).
        head_dim: size of each head (16).
        mlp_ratio: MLP hidden size / hidden_dim (2).
        tokenizer: `"patch"` or `"spt"`.
        attention: `"standard"` or `"lsa"`.
        suppression: SATA settings or None.
        context_broadcasting: CB settings or None.
        context_broadcasting_position: `"mlp_output"`, `"attention_output"` or
            `"block_output"`.
        drop_path_rate: stochastic depth rate.
        dropout: dropout in attention projections and MLPs.
        embedding_dropout: dropout after the position embedding.
        attention_dropout: dropout on attention probabilities.
        shift_directions: SPT directions, `"diagonal"`, `"cardinal"` or `"all"`.
        shift_ratio: SPT shift as a fraction of the patch size.
        layer_norm_epsilon: LayerNorm epsilon.
        seed: seed of the drop-path randomness.
        dtype: dtype policy of every layer (e.g. `"mixed_bfloat16"`).
    """

    def __init__(
        self,
        image_size=32,
        patch_size=4,
        num_channels=3,
        hidden_dim=192,
        depth=9,
        num_heads=12,
        head_dim=16,
        mlp_ratio=2.0,
        tokenizer="patch",
        attention="standard",
        suppression=None,
        context_broadcasting=None,
        context_broadcasting_position="mlp_output",
        drop_path_rate=0.0,
        dropout=0.0,
        embedding_dropout=0.0,
        attention_dropout=0.0,
        shift_directions="diagonal",
        shift_ratio=0.5,
        layer_norm_epsilon=1e-5,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        # Validate everything up front so errors name the backbone argument.
        image_hw = as_pair("image_size", image_size)
        patch_hw = as_pair("patch_size", patch_size)
        for axis, size, patch in zip(("height", "width"), image_hw, patch_hw):
            check_divisible(f"image_size ({axis})", size, f"patch_size ({axis})", patch)
        check_positive_int("num_channels", num_channels)
        check_positive_int("depth", depth)
        check_choice("tokenizer", tokenizer, TOKENIZERS)
        check_choice("attention", attention, tuple(ATTENTION_TYPES))
        check_choice("context_broadcasting_position", context_broadcasting_position, CONTEXT_BROADCASTING_POSITIONS)
        check_choice("shift_directions", shift_directions, tuple(SHIFT_DIRECTIONS))
        check_range("embedding_dropout", embedding_dropout, 0.0, 1.0, high_inclusive=False)
        suppression = suppression_config(suppression)
        context_broadcasting = context_broadcasting_config(context_broadcasting)

        # === Layers ===
        if tokenizer == "spt":
            tokenizer_layer = ShiftedPatchTokenization(
                patch_hw,
                hidden_dim,
                shift_directions=shift_directions,
                shift_ratio=shift_ratio,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name="tokenizer",
            )
        else:
            tokenizer_layer = PatchEmbedding(patch_hw, hidden_dim, dtype=dtype, name="tokenizer")
        embedding = ClassTokenAndPositionEmbedding(dtype=dtype, name="embedding")
        embedding_dropout_layer = keras.layers.Dropout(embedding_dropout, dtype=dtype, name="embedding_dropout")
        blocks = [
            TransformerBlock(
                num_heads=num_heads,
                head_dim=head_dim,
                mlp_ratio=mlp_ratio,
                attention=attention,
                suppression=suppression,
                context_broadcasting=context_broadcasting,
                context_broadcasting_position=context_broadcasting_position,
                drop_path_rate=drop_path_rate,
                dropout=dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                seed=None if seed is None else seed + i,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(depth)
        ]

        # === Functional model ===
        images = keras.Input(shape=(*image_hw, num_channels), name="images")
        x = embedding_dropout_layer(embedding(tokenizer_layer(images)))
        attention_maps = []
        for block in blocks:
            x, probs = block(x, return_attention_scores=True)
            attention_maps.append(probs)
        super().__init__(
            inputs=images,
            outputs={"sequence_output": x, "attention_maps": attention_maps},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.image_size = image_hw
        self.patch_size = patch_hw
        self.grid_size = (image_hw[0] // patch_hw[0], image_hw[1] // patch_hw[1])
        self.num_prefix_tokens = 1
        self.num_channels = num_channels
        self.hidden_dim = hidden_dim
        self.depth = depth
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.mlp_ratio = mlp_ratio
        self.tokenizer = tokenizer
        self.attention = attention
        self.suppression = suppression
        self.context_broadcasting = context_broadcasting
        self.context_broadcasting_position = context_broadcasting_position
        self.drop_path_rate = drop_path_rate
        self.dropout = dropout
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.shift_directions = shift_directions
        self.shift_ratio = shift_ratio
        self.layer_norm_epsilon = layer_norm_epsilon
        self.seed = seed

    def class_token_attention(self, attention_maps):
        """Class-token rows of `attention_maps` on the patch grid: a list of
        `(B, num_heads, grid_h, grid_w)` (override point: backbones without
        class-token maps return None)."""
        return class_token_attention(attention_maps, self.grid_size, self.num_prefix_tokens)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "hidden_dim": self.hidden_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "mlp_ratio": self.mlp_ratio,
            "tokenizer": self.tokenizer,
            "attention": self.attention,
            "suppression": self.suppression,
            "context_broadcasting": self.context_broadcasting,
            "context_broadcasting_position": self.context_broadcasting_position,
            "drop_path_rate": self.drop_path_rate,
            "dropout": self.dropout,
            "embedding_dropout": self.embedding_dropout,
            "attention_dropout": self.attention_dropout,
            "shift_directions": self.shift_directions,
            "shift_ratio": self.shift_ratio,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
