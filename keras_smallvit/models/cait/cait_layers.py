"""CaiT layers: LayerScale, talking-heads attention (self and class attention), the block."""

import keras
from keras import ops

from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.attention import suppression_config
from keras_smallvit.layers.context_broadcasting import ContextBroadcasting
from keras_smallvit.layers.stochastic_depth import StochasticDepth
from keras_smallvit.layers.transformer_block import CONTEXT_BROADCASTING_POSITIONS
from keras_smallvit.layers.transformer_block import context_broadcasting_config
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

CAIT_ATTENTION_TYPES = ("standard", "lsa")


def official_layer_scale_init(layer_number):
    """LayerScale's initial value in the official code, from the 1-based
    index of the layer within its stack (not from the total depth): 0.1 up to
    layer 18, 1e-5 up to 24, 1e-6 beyond."""
    if layer_number <= 18:
        return 0.1
    if layer_number <= 24:
        return 1e-5
    return 1e-6


@keras.saving.register_keras_serializable(package="keras_smallvit")
class LayerScale(keras.layers.Layer):
    """Multiplies each channel by a learned scale: `x * gamma` (CaiT).

    `gamma` has one entry per channel, all initialised to `initial_value`,
    so a residual branch starts close to zero in deep networks.

    Args:
        initial_value: initial value of every entry of `gamma`, `> 0`.
    """

    def __init__(self, initial_value=0.1, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = check_range("initial_value", initial_value, 0.0, None, low_inclusive=False)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.initial_value),
        )

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(initial_value=self.initial_value)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class LearnedPositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding `(1, N, D)` to a token sequence.

    Starts from a normal distribution with `initializer_stddev` (1.0, like
    `torch.randn` in the official CaiT code, where it covers the patch tokens
    only: the class token enters later, without one).

    Args:
        initializer_stddev: standard deviation of the initial values, `> 0`.
    """

    def __init__(self, initializer_stddev=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initializer_stddev = check_range(
            "initializer_stddev", initializer_stddev, 0.0, None, low_inclusive=False
        )

    def build(self, input_shape):
        _, num_tokens, dim = input_shape
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(1, num_tokens, dim),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_stddev),
        )

    def call(self, tokens):
        return tokens + ops.cast(self.position_embedding, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(initializer_stddev=self.initializer_stddev)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ClassToken(keras.layers.Layer):
    """A learned class token, repeated over the batch: `(B, N, D) -> (B, 1, D)`.

    The input only gives the batch size and the token size (CaiT feeds the
    class token to its class-attention layers, apart from the patch tokens).

    Args:
        initializer_stddev: standard deviation of the initial values, `> 0`
            (1.0, like `torch.randn` in the official code).
    """

    def __init__(self, initializer_stddev=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initializer_stddev = check_range(
            "initializer_stddev", initializer_stddev, 0.0, None, low_inclusive=False
        )

    def build(self, input_shape):
        self.class_token = self.add_weight(
            name="class_token",
            shape=(1, 1, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_stddev),
        )

    def call(self, tokens):
        token = ops.cast(self.class_token, tokens.dtype)
        return ops.broadcast_to(token, (ops.shape(tokens)[0], 1, tokens.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(initializer_stddev=self.initializer_stddev)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class TalkingHeadsAttention(MultiHeadSelfAttention):
    """Multi-head attention with talking heads (Shazeer et al. 2020), as in CaiT.

    Per head `h`, `S_h = (q_h * scale_h) k_h^T`; then, in float32:
    1. pre-softmax head mixing `S'_g = sum_h S_h W_pre[h, g]`;
    2. LSA diagonal mask on `S'` (with `diagonal_mask`): the mask is applied
       after the mixing, because a masked score mixed across heads would no
       longer be masked (the official code masks before mixing, with a value
       of -1e-9 that masks nothing; here the diagonal gets -65504, so it is
       exactly 0 after the softmax);
    3. softmax over the keys: `P'`;
    4. SATA on `P'` (with `suppression`): on the softmax probabilities,
       before the post-softmax mixing, because the mixed weights are not
       probabilities (they can be negative and rows do not sum to 1), which
       TWIST's threshold and its bound (Lemma 1) need;
    5. post-softmax head mixing `A_g = sum_h P'_h W_post[h, g]`;
    then `A @ v`, output projection and dropout as in the parent layer.
    Masked diagonal entries stay exactly 0 through step 5. `W_pre` and
    `W_post` are `(heads, heads)` and start from a standard normal
    distribution, like `torch.randn` in the official code.

    Class attention: when `context` is given, the queries come from `inputs`
    and the keys and values from `context` only, as in the official small-
    dataset code (`(B, Nq, dim)` attends over `(B, Nk, dim)`; the official
    CaiT of Touvron et al. also adds the class token to the keys). The same
    qkv Dense projects both (its `[q | k | v]` layout is the official
    `to_q` and `to_kv` side by side). The diagonal mask does not apply there.

    Call args:
        inputs: `(B, Nq, dim)`.
        context: optional `(B, Nk, dim)` keys/values (class attention).
        return_attention_scores: also return the float32 weights `A`
            `(B, heads, Nq, Nk)` that multiply `v` (after step 5).
        training: dropout switch.

    Args: those of `MultiHeadSelfAttention`.
    """

    def build(self, input_shape):
        super().build(input_shape)
        init = keras.initializers.RandomNormal(stddev=1.0)
        self.pre_softmax_mixing = self.add_weight(
            name="pre_softmax_mixing", shape=(self.num_heads, self.num_heads), initializer=init
        )
        self.post_softmax_mixing = self.add_weight(
            name="post_softmax_mixing", shape=(self.num_heads, self.num_heads), initializer=init
        )

    def attention_scores(self, query, key):
        scores = super().attention_scores(query, key)
        return ops.einsum("bhqk,hg->bgqk", scores, ops.cast(self.pre_softmax_mixing, "float32"))

    def attention_probabilities(self, query, key):
        probs = super().attention_probabilities(query, key)  # mask, softmax, SATA
        return ops.einsum("bhqk,hg->bgqk", probs, ops.cast(self.post_softmax_mixing, "float32"))

    def call(self, inputs, context=None, return_attention_scores=False, training=None):
        if context is None:
            return super().call(inputs, return_attention_scores=return_attention_scores, training=training)
        if self.diagonal_mask:
            raise ValueError(
                "`diagonal_mask=True` is for self-attention; class attention (a "
                "`context` input) has no diagonal. Use diagonal_mask=False."
            )
        query = self.query_key_value(inputs)[0]
        _, key, value = self.query_key_value(context)
        probs = self.attention_probabilities(query, key)
        weights = self.attention_dropout_layer(ops.cast(probs, value.dtype), training=training)
        out = self.output_dropout_layer(self.output_projection(self.combine_heads(weights, value)), training=training)
        if return_attention_scores:
            return out, probs
        return out


@keras.saving.register_keras_serializable(package="keras_smallvit")
class CaiTBlock(keras.layers.Layer):
    """CaiT layer: `x + DP(LS(Attn(LN(x))))`, then `x + DP(LS(MLP(LN(x))))`.

    `Attn` is `TalkingHeadsAttention`, LS a `LayerScale`, DP stochastic depth,
    MLP Dense(mlp_ratio * dim, GELU) -> Dropout -> Dense(dim) -> Dropout.

    - Patch-attention layer (`class_attention=False`): self-attention of the
      patch tokens; with `attention="lsa"`, diagonal mask and learned
      per-head temperature.
    - Class-attention layer (`class_attention=True`): call it on the class
      token(s) with `context=` the patch tokens; only the class token is
      updated. The queries come from `LN(class token)`, the keys and values
      from the patch tokens as they are (not normalised), as in the official
      code. `attention="lsa"` gives the learned temperature only (no
      diagonal: a class token does not attend to itself here).

    Context broadcasting, when on, acts on the block's own token sequence at
    `context_broadcasting_position` (see `TransformerBlock`): after the MLP's
    last dropout, before LayerScale (the two commute: both act per channel),
    drop path and the residual add, by default. On a class-attention layer
    that sequence is the single class token, where the token mean is the
    token itself, so CB has no effect there.

    Call args:
        inputs: `(B, N, dim)`.
        context: `(B, Nk, dim)` patch tokens (class-attention layers only).
        return_attention_scores: also return the float32 attention weights
            `(B, heads, N, N)` (`(B, heads, N, Nk)` for class attention).
        training: dropout / drop-path switch.

    Args:
        num_heads: attention heads.
        head_dim: size of each head.
        mlp_ratio: MLP hidden size as a multiple of the input size.
        class_attention: whether this is a class-attention layer.
        attention: `"standard"` or `"lsa"`.
        layer_scale_init: initial LayerScale value of both branches, `> 0`.
        suppression: SATA settings (see `TalkingHeadsAttention` for where it
            acts), or None.
        context_broadcasting: CB settings (`True`, or a dict with `ratio`,
            `learnable_scale`), or None.
        context_broadcasting_position: `"mlp_output"`, `"attention_output"`
            or `"block_output"`.
        drop_path_rate: stochastic depth rate of both branches.
        dropout: dropout after the attention projection and in the MLP.
        attention_dropout: dropout on the attention weights.
        layer_norm_epsilon: LayerNorm epsilon (PyTorch's default, 1e-5).
        use_qkv_bias: bias in the qkv projection (False in the official code).
        seed: seed of the drop-path randomness.
    """

    def __init__(
        self,
        num_heads,
        head_dim,
        mlp_ratio=2.0,
        class_attention=False,
        attention="standard",
        layer_scale_init=0.1,
        suppression=None,
        context_broadcasting=None,
        context_broadcasting_position="mlp_output",
        drop_path_rate=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-5,
        use_qkv_bias=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.mlp_ratio = check_range("mlp_ratio", mlp_ratio, 0.0, None, low_inclusive=False)
        self.class_attention = bool(class_attention)
        self.attention = check_choice("attention", attention, CAIT_ATTENTION_TYPES)
        self.layer_scale_init = check_range("layer_scale_init", layer_scale_init, 0.0, None, low_inclusive=False)
        self.suppression = suppression_config(suppression)
        self.context_broadcasting = context_broadcasting_config(context_broadcasting)
        self.context_broadcasting_position = check_choice(
            "context_broadcasting_position", context_broadcasting_position, CONTEXT_BROADCASTING_POSITIONS
        )
        self.drop_path_rate = check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_inclusive=False)
        self.dropout = check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.attention_dropout = check_range(
            "attention_dropout", attention_dropout, 0.0, 1.0, high_inclusive=False
        )
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_qkv_bias = bool(use_qkv_bias)
        self.seed = seed

    def build(self, input_shape):
        dim = input_shape[-1]
        mlp_dim = int(dim * self.mlp_ratio)
        policy = self.dtype_policy
        eps = self.layer_norm_epsilon
        lsa = self.attention == "lsa"
        self.attention_norm = keras.layers.LayerNormalization(epsilon=eps, dtype=policy, name="attention_norm")
        self.attention_norm.build(input_shape)
        self.attention_layer = TalkingHeadsAttention(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            diagonal_mask=lsa and not self.class_attention,
            learnable_temperature=lsa,
            suppression=self.suppression,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            use_qkv_bias=self.use_qkv_bias,
            dtype=policy,
            name="attention",
        )
        self.attention_layer.build(input_shape)
        self.attention_scale = LayerScale(self.layer_scale_init, dtype=policy, name="attention_scale")
        self.attention_scale.build(input_shape)
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=eps, dtype=policy, name="mlp_norm")
        self.mlp_norm.build(input_shape)
        self.mlp_dense_1 = keras.layers.Dense(mlp_dim, activation="gelu", dtype=policy, name="mlp_dense_1")
        self.mlp_dense_1.build(input_shape)
        self.mlp_dense_2 = keras.layers.Dense(dim, dtype=policy, name="mlp_dense_2")
        self.mlp_dense_2.build(tuple(input_shape[:-1]) + (mlp_dim,))
        self.mlp_dropout_1 = keras.layers.Dropout(self.dropout, dtype=policy)
        self.mlp_dropout_2 = keras.layers.Dropout(self.dropout, dtype=policy)
        self.mlp_scale = LayerScale(self.layer_scale_init, dtype=policy, name="mlp_scale")
        self.mlp_scale.build(input_shape)
        self.drop_path = StochasticDepth(self.drop_path_rate, seed=self.seed, dtype=policy, name="drop_path")
        self.context_broadcasting_layer = None
        if self.context_broadcasting is not None:
            self.context_broadcasting_layer = ContextBroadcasting(
                **self.context_broadcasting, dtype=policy, name="context_broadcasting"
            )
            self.context_broadcasting_layer.build(input_shape)

    def _broadcast_at(self, position, x):
        if self.context_broadcasting_layer is not None and self.context_broadcasting_position == position:
            return self.context_broadcasting_layer(x)
        return x

    def _check_context(self, context):
        if self.class_attention != (context is not None):
            raise ValueError(
                "A class-attention CaiTBlock needs `context` (the patch tokens); a "
                f"patch-attention one takes none. Got class_attention={self.class_attention}, "
                f"context={'given' if context is not None else 'None'}."
            )

    def call(self, inputs, context=None, return_attention_scores=False, training=None):
        self._check_context(context)
        branch, probs = self.attention_layer(
            self.attention_norm(inputs), context=context, return_attention_scores=True, training=training
        )
        branch = self._broadcast_at("attention_output", branch)
        x = inputs + self.drop_path(self.attention_scale(branch), training=training)
        branch = self.mlp_dropout_1(self.mlp_dense_1(self.mlp_norm(x)), training=training)
        branch = self.mlp_dropout_2(self.mlp_dense_2(branch), training=training)
        branch = self._broadcast_at("mlp_output", branch)
        x = x + self.drop_path(self.mlp_scale(branch), training=training)
        x = self._broadcast_at("block_output", x)
        if return_attention_scores:
            return x, probs
        return x

    def compute_output_spec(self, inputs, context=None, return_attention_scores=False, training=None):
        # Shapes without tracing `call` (keeps building a 26-layer model fast).
        self._check_context(context)
        out = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return out
        keys = (inputs if context is None else context).shape[1]
        return out, keras.KerasTensor((inputs.shape[0], self.num_heads, inputs.shape[1], keys), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            mlp_ratio=self.mlp_ratio,
            class_attention=self.class_attention,
            attention=self.attention,
            layer_scale_init=self.layer_scale_init,
            suppression=self.suppression,
            context_broadcasting=self.context_broadcasting,
            context_broadcasting_position=self.context_broadcasting_position,
            drop_path_rate=self.drop_path_rate,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            use_qkv_bias=self.use_qkv_bias,
            seed=self.seed,
        )
        return config
