"""CaiT layers: LayerScale, talking-heads attention (self and class attention), the block."""

import keras
from keras import ops

from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.attention import attention_output_spec
from keras_smallvit.layers.transformer_block import TransformerBlock
from keras_smallvit.utils.validation import check_range


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

    The mixing is `MultiHeadSelfAttention`'s head-mixing hook
    (`head_mixing`), so this layer always takes the explicit form.

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
            `(B, heads, Nq, Nk)` that multiply `v` (after step 5); `"all"`:
            the dict of `MultiHeadSelfAttention` (before and after SATA:
            steps 3 and 4, and `"weights"`: step 5).
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

    def head_mixing(self):
        # Steps 1 and 5, around the base class's mask, softmax and SATA.
        return self.pre_softmax_mixing, self.post_softmax_mixing


@keras.saving.register_keras_serializable(package="keras_smallvit")
class CaiTBlock(TransformerBlock):
    """CaiT layer: `x + DP(LS(Attn(LN(x))))`, then `x + DP(LS(MLP(LN(x))))`.

    A `TransformerBlock` whose attention is `TalkingHeadsAttention` and whose
    branches are scaled by a `LayerScale` (LS) before drop path (DP).

    - Patch-attention layer (`class_attention=False`): self-attention of the
      patch tokens; with LSA, diagonal mask and learned per-head temperature.
    - Class-attention layer (`class_attention=True`): call it on the class
      token(s) with `context=` the patch tokens; only the class token is
      updated. The queries come from `LN(class token)`, the keys and values
      from the patch tokens as they are (not normalised), as in the official
      code. LSA gives the learned temperature only (no diagonal: a class
      token does not attend to itself here), and the block techniques that
      mix tokens (CB) are left out: over a single token they do nothing.

    Block techniques act where `TransformerBlock` puts them: CB after the
    MLP's last dropout, before LayerScale (the two commute: both act per
    channel), drop path and the residual add, by default.

    Call args:
        inputs: `(B, N, dim)`.
        context: `(B, Nk, dim)` patch tokens (class-attention layers only).
        return_attention_scores: also return the float32 attention weights
            `(B, heads, N, N)` (`(B, heads, N, Nk)` for class attention);
            `"all"`: the attention's dict of maps.
        training: dropout / drop-path switch.

    Args:
        num_heads: attention heads.
        head_dim: size of each head.
        class_attention: whether this is a class-attention layer.
        layer_scale_init: initial LayerScale value of both branches, `> 0`.
        **kwargs: the other `TransformerBlock` arguments (`mlp_ratio`,
            `techniques`, `drop_path_rate`, `dropout`, `attention_dropout`,
            `layer_norm_epsilon`, `use_qkv_bias`, `seed`).
    """

    def __init__(self, num_heads, head_dim, class_attention=False, layer_scale_init=0.1, **kwargs):
        super().__init__(num_heads, head_dim, **kwargs)
        self.class_attention = bool(class_attention)
        self.layer_scale_init = check_range("layer_scale_init", layer_scale_init, 0.0, None, low_inclusive=False)

    @property
    def single_token(self):
        return self.class_attention

    def make_attention_layer(self):
        return TalkingHeadsAttention(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            **self.techniques.attention_options(self_attention=not self.class_attention),
            **self.attention_arguments(),
        )

    def build(self, input_shape):
        super().build(input_shape)
        policy = self.dtype_policy
        self.attention_scale = LayerScale(self.layer_scale_init, dtype=policy, name="attention_scale")
        self.attention_scale.build(input_shape)
        self.mlp_scale = LayerScale(self.layer_scale_init, dtype=policy, name="mlp_scale")
        self.mlp_scale.build(input_shape)

    def scale_branch(self, branch, x):
        return self.attention_scale(x) if branch == "attention" else self.mlp_scale(x)

    def _check_context(self, context):
        if self.class_attention != (context is not None):
            raise ValueError(
                "A class-attention CaiTBlock needs `context` (the patch tokens); a "
                f"patch-attention one takes none. Got class_attention={self.class_attention}, "
                f"context={'given' if context is not None else 'None'}."
            )

    def call(self, inputs, context=None, return_attention_scores=False, training=None):
        self._check_context(context)
        attention_kwargs = {} if context is None else {"context": context}
        return super().call(
            inputs, return_attention_scores=return_attention_scores, training=training, **attention_kwargs
        )

    def compute_output_spec(self, inputs, context=None, return_attention_scores=False, training=None):
        # Shapes without tracing `call` (keeps building a 26-layer model fast).
        self._check_context(context)
        out = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        keys = (inputs if context is None else context).shape[1]
        return attention_output_spec(out, (inputs.shape[0], self.num_heads, inputs.shape[1], keys), return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update(class_attention=self.class_attention, layer_scale_init=self.layer_scale_init)
        return config
