"""CaiT backbone for small datasets; the techniques come as one `TechniqueSpec`."""

import keras

from keras_smallvit.models.backbone import Backbone
from keras_smallvit.models.backbone import call_block
from keras_smallvit.models.backbone import check_image_and_patch_size
from keras_smallvit.models.backbone import make_embedding_dropout
from keras_smallvit.models.backbone import resolve_techniques
from keras_smallvit.models.attention_maps import class_token_attention
from keras_smallvit.models.cait.cait_layers import CaiTBlock
from keras_smallvit.models.cait.cait_layers import ClassToken
from keras_smallvit.models.cait.cait_layers import LearnedPositionEmbedding
from keras_smallvit.models.cait.cait_layers import official_layer_scale_init
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range


@keras.saving.register_keras_serializable(package="keras_smallvit")
class CaiTBackbone(Backbone):
    """CaiT backbone (Touvron et al. 2021), as in the small-dataset papers' code.

    images `(B, H, W, C)` -> tokenizer -> learned position embedding (patch
    tokens only) -> embedding dropout -> `depth` patch-attention `CaiTBlock`s
    (self-attention of the patch tokens) -> a learned class token enters ->
    `class_depth` class-attention `CaiTBlock`s (the class token attends to the
    final patch tokens, which stay fixed). Every layer has talking heads and
    LayerScale on both branches; LayerScale starts at the official code's
    per-layer value (0.1 for layers 1-18 of a stack, 1e-5 for 19-24, 1e-6
    beyond) unless `layer_scale_init` is given. No final LayerNorm: the
    classifier head (LayerNorm + Dense on the class token) is the official
    one. Stochastic depth uses one rate in every layer (official code).

    Outputs a dict:
    - `"sequence_output"`: `(B, 1 + N, hidden_dim)`, the class token after
      the class-attention layers first, then the patch tokens after the
      patch-attention layers;
    - `"attention_maps"`: a list of float32 weights from the same forward
      pass: `depth` patch-attention maps `(B, num_heads, N, N)`, then
      `class_depth` class-attention maps `(B, num_heads, 1, N)`. These are the
      weights that multiply the values, after the post-softmax head mixing
      (so not probabilities: entries may be negative).
      `class_token_attention()` returns the class-attention maps on the
      patch grid.

    Where the techniques (`techniques`, a `TechniqueSpec`) act:
    - SPT: replaces the patch embedding.
    - LSA: learned per-head temperature in all
      `depth + class_depth` layers (as in the official code); diagonal mask
      in the patch-attention layers only, applied after the pre-softmax head
      mixing, so every token's weight on itself is exactly 0 in the final
      weights. The official code writes -1e-9 on the diagonal (before the
      mixing), which masks nothing; that bug is not reproduced.
    - SATA: in every layer, patch and class attention, on the
      softmax probabilities of each head (after the pre-softmax mixing and
      the mask), before the post-softmax mixing (see `TalkingHeadsAttention`).
      In a class-attention layer it acts on the class token's probabilities
      over the patches.
    - Block techniques (CB): in every patch-attention layer (CB by default
      at the MLP output, before LayerScale,
      drop path and the residual add; the mean runs over the patch tokens,
      as there is no class token among them). Not in the class-attention
      layers, where the only updated token is the class token and the token
      mean would be the identity (`CaiTBlock` leaves them out there).

    Args:
        image_size: int or `(height, width)`.
        patch_size: int or `(height, width)`; must divide `image_size`.
        num_channels: input channels.
        hidden_dim: token size (192).
        depth: patch-attention layers (24).
        class_depth: class-attention layers (2).
        num_heads: attention heads (4).
        head_dim: size of each head (64).
        mlp_ratio: MLP hidden size / hidden_dim (2, i.e. 384).
        techniques: a `TechniqueSpec` (see `ViTBackbone`).
        layer_scale_init: one initial LayerScale value for every layer, or
            None for the official per-layer values.
        drop_path_rate: stochastic depth rate.
        dropout: dropout in attention projections and MLPs.
        embedding_dropout: dropout after the position embedding.
        attention_dropout: dropout on attention weights.
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
        depth=24,
        class_depth=2,
        num_heads=4,
        head_dim=64,
        mlp_ratio=2.0,
        techniques=None,
        layer_scale_init=None,
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
        techniques = resolve_techniques(techniques, kwargs, owner=type(self))
        image_hw, patch_hw = check_image_and_patch_size(image_size, patch_size)
        check_positive_int("num_channels", num_channels)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("depth", depth)
        check_positive_int("class_depth", class_depth)
        if layer_scale_init is not None:
            check_range("layer_scale_init", layer_scale_init, 0.0, None, low_inclusive=False)

        # === Layers ===
        tokenizer = techniques.make_tokenizer(patch_hw, hidden_dim, layer_norm_epsilon=layer_norm_epsilon, dtype=dtype)
        position_embedding = LearnedPositionEmbedding(dtype=dtype, name="position_embedding")
        embedding_dropout_layer = make_embedding_dropout(embedding_dropout, dtype)
        class_token = ClassToken(dtype=dtype, name="class_token")

        def block(index, class_attention):
            # Layer numbers restart at 1 in each stack, as in the official code.
            number = index + 1
            return CaiTBlock(
                num_heads=num_heads,
                head_dim=head_dim,
                mlp_ratio=mlp_ratio,
                class_attention=class_attention,
                techniques=techniques,
                layer_scale_init=layer_scale_init or official_layer_scale_init(number),
                drop_path_rate=drop_path_rate,
                dropout=dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                seed=None if seed is None else seed + index + (depth if class_attention else 0),
                dtype=dtype,
                name=f"{'class' if class_attention else 'patch'}_block_{index}",
            )

        patch_blocks = [block(i, False) for i in range(depth)]
        class_blocks = [block(i, True) for i in range(class_depth)]
        concatenate = keras.layers.Concatenate(axis=1, dtype=dtype, name="sequence_output")

        # === Functional model ===
        images = keras.Input(shape=(*image_hw, num_channels), name="images")
        patches = embedding_dropout_layer(position_embedding(tokenizer(images)))
        attention_maps = []
        for layer in patch_blocks:
            patches = call_block(layer, patches, attention_maps)
        cls = class_token(patches)
        for layer in class_blocks:
            cls = call_block(layer, cls, attention_maps, context=patches)
        super().__init__(
            inputs=images,
            outputs={"sequence_output": concatenate([cls, patches]), "attention_maps": attention_maps},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.grid_size = (image_hw[0] // patch_hw[0], image_hw[1] // patch_hw[1])
        self.num_prefix_tokens = 1
        self.set_config(
            image_size=image_hw,
            patch_size=patch_hw,
            num_channels=num_channels,
            hidden_dim=hidden_dim,
            depth=depth,
            class_depth=class_depth,
            num_heads=num_heads,
            head_dim=head_dim,
            mlp_ratio=mlp_ratio,
            techniques=techniques,
            layer_scale_init=layer_scale_init,
            drop_path_rate=drop_path_rate,
            dropout=dropout,
            embedding_dropout=embedding_dropout,
            attention_dropout=attention_dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            seed=seed,
        )

    def class_token_attention(self, attention_maps):
        """The class-attention layers' maps on the patch grid: a list of
        `class_depth` tensors `(B, num_heads, grid_h, grid_w)` (the class
        token's weights over the patches), from this backbone's
        `"attention_maps"` output."""
        class_maps = list(attention_maps)[-self.class_depth :]
        return class_token_attention(class_maps, self.grid_size, num_prefix_tokens=0)
