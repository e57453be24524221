"""ViT backbone for small datasets; the techniques come as one `TechniqueSpec`."""

import keras

from keras_smallvit.models.backbone import Backbone
from keras_smallvit.models.backbone import call_block
from keras_smallvit.models.backbone import check_image_and_patch_size
from keras_smallvit.models.backbone import make_embedding_dropout
from keras_smallvit.models.backbone import resolve_techniques
from keras_smallvit.layers.embedding import ClassTokenAndPositionEmbedding
from keras_smallvit.layers.transformer_block import TransformerBlock
from keras_smallvit.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ViTBackbone(Backbone):
    """Vision Transformer backbone (functional), as in the small-dataset papers.

    images `(B, H, W, C)` -> tokenizer -> class token + position embedding ->
    embedding dropout -> `depth` pre-norm `TransformerBlock`s. There is no
    final LayerNorm: the classifier head brings its own, like the official
    code. Stochastic depth uses the same rate in every block (official code).

    Outputs a dict:
    - `"sequence_output"`: `(B, 1 + N, hidden_dim)`, class token first
      (`(B, 2 + N, hidden_dim)` with `distillation_token`: the class token,
      then DeiT's distillation token);
    - `"attention_maps"`: a list with one `(B, num_heads, 1 + N, 1 + N)`
      float32 tensor per block (after LSA masking and SATA), from the same
      forward pass. `class_token_attention()` turns them into class-token maps
      on the patch grid.

    The techniques (`techniques`, a `TechniqueSpec`): SPT tokenizes the
    images; LSA, SATA and the block techniques (CB) act in every block.

    Args:
        image_size: int or `(height, width)`.
        patch_size: int or `(height, width)`; must divide `image_size`.
        num_channels: input channels.
        hidden_dim: token size (192).
        depth: number of blocks (9).
        num_heads: attention heads (12).
        head_dim: size of each head (16).
        mlp_ratio: MLP hidden size / hidden_dim (2).
        techniques: a `TechniqueSpec`, names (`("spt", "lsa")`) or its config
            dict (see `TechniqueSpec.resolve`; the flat options of older
            configs, `tokenizer=...`, `suppression=...`, are accepted too).
        drop_path_rate: stochastic depth rate.
        dropout: dropout in attention projections and MLPs.
        embedding_dropout: dropout after the position embedding.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon.
        embedding_initializer_stddev: the std of the normal the class token
            and the position embedding start from (1.0: `torch.randn`, the
            small-dataset code; 0.02: the ImageNet code's `trunc_normal_`).
        use_qkv_bias: bias in the qkv projections (False in the
            small-dataset code; True in DeiT).
        distillation_token: DeiT's distillation token after the class token
            (`num_prefix_tokens` 2; an `ImageClassifier` then adds DeiT's
            distillation head).
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
        techniques=None,
        drop_path_rate=0.0,
        dropout=0.0,
        embedding_dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-5,
        embedding_initializer_stddev=1.0,
        use_qkv_bias=False,
        distillation_token=False,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        # Validate everything up front so errors name the backbone argument.
        techniques = resolve_techniques(techniques, kwargs, owner=type(self))
        image_hw, patch_hw = check_image_and_patch_size(image_size, patch_size)
        check_positive_int("num_channels", num_channels)
        check_positive_int("depth", depth)

        # === Layers ===
        tokenizer = techniques.make_tokenizer(patch_hw, hidden_dim, layer_norm_epsilon=layer_norm_epsilon, dtype=dtype)
        embedding = ClassTokenAndPositionEmbedding(
            embedding_initializer_stddev, distillation_token=distillation_token, dtype=dtype, name="embedding"
        )
        embedding_dropout_layer = make_embedding_dropout(embedding_dropout, dtype)
        blocks = [
            TransformerBlock(
                num_heads=num_heads,
                head_dim=head_dim,
                mlp_ratio=mlp_ratio,
                techniques=techniques,
                drop_path_rate=drop_path_rate,
                dropout=dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                use_qkv_bias=use_qkv_bias,
                seed=None if seed is None else seed + i,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(depth)
        ]

        # === Functional model ===
        images = keras.Input(shape=(*image_hw, num_channels), name="images")
        x = embedding_dropout_layer(embedding(tokenizer(images)))
        attention_maps = []
        for block in blocks:
            x = call_block(block, x, attention_maps)
        super().__init__(
            inputs=images,
            outputs={"sequence_output": x, "attention_maps": attention_maps},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.grid_size = (image_hw[0] // patch_hw[0], image_hw[1] // patch_hw[1])
        self.num_prefix_tokens = embedding.num_prefix_tokens
        self.set_config(
            image_size=image_hw,
            patch_size=patch_hw,
            num_channels=num_channels,
            hidden_dim=hidden_dim,
            depth=depth,
            num_heads=num_heads,
            head_dim=head_dim,
            mlp_ratio=mlp_ratio,
            techniques=techniques,
            drop_path_rate=drop_path_rate,
            dropout=dropout,
            embedding_dropout=embedding_dropout,
            attention_dropout=attention_dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            embedding_initializer_stddev=embedding_initializer_stddev,
            use_qkv_bias=bool(use_qkv_bias),
            distillation_token=distillation_token,
            seed=seed,
        )
