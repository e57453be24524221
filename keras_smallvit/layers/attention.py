"""Multi-head self-attention with the hooks the small-dataset papers need."""

import keras
from keras import ops

from keras_smallvit.layers.suppression import TrivialAttentionSuppression
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

# Written over masked scores with `where` (never added): the most negative
# finite float16, so the value stays finite in every float dtype and softmax
# gives exactly 0 there.
MASK_VALUE = -65504.0

_SUPPRESSION_ARGS = ("threshold", "initial_scale", "scale_lr_multiplier", "trainable_scale", "epsilon")


def suppression_config(suppression):
    """Normalises a `suppression` argument to `None` or a kwargs dict.

    Accepts `None`, a dict of `TrivialAttentionSuppression` arguments (an
    empty dict means the paper's defaults), `True` (the defaults), or a
    `TrivialAttentionSuppression` instance (its arguments are copied).
    """
    if suppression is None or suppression is False:
        return None
    if suppression is True:
        return {}
    if isinstance(suppression, TrivialAttentionSuppression):
        config = suppression.get_config()
        return {k: config[k] for k in _SUPPRESSION_ARGS}
    if isinstance(suppression, dict):
        unknown = sorted(set(suppression) - set(_SUPPRESSION_ARGS))
        if unknown:
            raise ValueError(
                f"Invalid `suppression` keys {unknown}. Allowed keys: "
                f"{', '.join(_SUPPRESSION_ARGS)}."
            )
        TrivialAttentionSuppression(**suppression)  # validates the values now
        return dict(suppression)
    raise ValueError(
        f"Invalid `suppression`: {suppression!r}. Allowed values: None, True, a "
        "dict of TrivialAttentionSuppression arguments, or a "
        "TrivialAttentionSuppression layer."
    )


@keras.saving.register_keras_serializable(package="keras_smallvit")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention with explicit float32 scores and softmax.

    `scores = (q * scale_h) k^T` per head; with `diagonal_mask` each token's
    score with itself is set to a large negative finite value (LSA); softmax
    in float32; optional SATA on the probabilities; then `probs @ v`, a Dense
    output projection and dropout. q, k and v come from one Dense without bias
    (as in the official code), laid out `[q | k | v]`, each `(heads, head_dim)`.

    `scale_h` is `attention_scale` (default `head_dim ** -0.5`), or with
    `learnable_temperature` a trainable per-head vector initialised to that
    value (LSA; weight decay applies to it as in the official code).

    Override points: `attention_scores(query, key)` (the scaled float32 scores
    before masking, e.g. to mix heads or add a bias) and
    `attention_probabilities(query, key)` (scores, mask, softmax, SATA).

    Call args:
        inputs: `(B, N, dim)`.
        return_attention_scores: if True, also returns the attention
            probabilities `(B, heads, N, N)` in float32, after masking and SATA
            (before attention dropout).
        training: dropout switch.

    Args:
        num_heads: number of heads.
        head_dim: size of each head.
        diagonal_mask: mask each token's attention to itself (LSA).
        learnable_temperature: one trainable softmax scale per head (LSA).
        suppression: SATA on the probabilities: `None`, `True` (paper
            defaults) or a dict of `TrivialAttentionSuppression` arguments.
        dropout: dropout rate after the output projection.
        attention_dropout: dropout rate on the attention probabilities.
        use_qkv_bias: bias in the qkv projection (False in the official code).
        output_dim: output size; defaults to the input size.
        attention_scale: softmax scale (initial temperature with
            `learnable_temperature`), `> 0`; defaults to `head_dim ** -0.5`.
    """

    def __init__(
        self,
        num_heads,
        head_dim,
        diagonal_mask=False,
        learnable_temperature=False,
        suppression=None,
        dropout=0.0,
        attention_dropout=0.0,
        use_qkv_bias=False,
        output_dim=None,
        attention_scale=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.diagonal_mask = bool(diagonal_mask)
        self.learnable_temperature = bool(learnable_temperature)
        self.suppression = suppression_config(suppression)
        self.dropout = check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.attention_dropout = check_range(
            "attention_dropout", attention_dropout, 0.0, 1.0, high_inclusive=False
        )
        self.use_qkv_bias = bool(use_qkv_bias)
        self.output_dim = None if output_dim is None else check_positive_int("output_dim", output_dim)
        self.attention_scale = (
            None
            if attention_scale is None
            else check_range("attention_scale", attention_scale, 0.0, None, low_inclusive=False)
        )

    @property
    def default_scale(self):
        """`attention_scale`, or `head_dim ** -0.5` when it is None."""
        return self.head_dim**-0.5 if self.attention_scale is None else self.attention_scale

    def build(self, input_shape):
        dim = input_shape[-1]
        inner_dim = self.num_heads * self.head_dim
        self.qkv = keras.layers.Dense(
            3 * inner_dim, use_bias=self.use_qkv_bias, dtype=self.dtype_policy, name="qkv"
        )
        self.qkv.build((None, None, dim))
        if self.learnable_temperature:
            self.temperature = self.add_weight(
                name="temperature",
                shape=(self.num_heads,),
                initializer=keras.initializers.Constant(self.default_scale),
            )
        if self.suppression is not None:
            self.suppression_layer = TrivialAttentionSuppression(
                **self.suppression, dtype=self.dtype_policy, name="suppression"
            )
            self.suppression_layer.build((None, self.num_heads, None, None))
        self.output_projection = keras.layers.Dense(
            self.output_dim or dim, dtype=self.dtype_policy, name="output_projection"
        )
        self.output_projection.build((None, None, inner_dim))
        self.attention_dropout_layer = keras.layers.Dropout(
            self.attention_dropout, dtype=self.dtype_policy
        )
        self.output_dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def attention_scores(self, query, key):
        """Scaled float32 scores `(B, heads, Nq, Nk)` from `(B, N, heads, head_dim)` q, k.

        Override point for changes before masking and softmax (a bias, head
        mixing).
        """
        if self.learnable_temperature:
            scale = ops.cast(self.temperature, query.dtype)[:, None]
        else:
            scale = self.default_scale
        scores = ops.einsum("bqhd,bkhd->bhqk", query * scale, key)
        return ops.cast(scores, "float32")

    def attention_probabilities(self, query, key):
        """float32 probabilities `(B, heads, Nq, Nk)` from `(B, N, heads, head_dim)` q, k.

        Override point for other score functions (relative position bias,
        talking heads): `attention_scores`, then masking, softmax and SATA.
        """
        scores = self.attention_scores(query, key)
        if self.diagonal_mask:
            num_tokens = scores.shape[-1] or ops.shape(scores)[-1]
            diagonal = ops.cast(ops.eye(num_tokens), "bool")
            scores = ops.where(diagonal, MASK_VALUE, scores)
        probs = ops.softmax(scores, axis=-1)
        if self.suppression is not None:
            probs = self.suppression_layer(probs)
        return probs

    def call(self, inputs, return_attention_scores=False, training=None):
        batch_tokens = ops.shape(inputs)[:2]
        qkv = self.qkv(inputs)
        qkv = ops.reshape(qkv, (-1, inputs.shape[1] or batch_tokens[1], 3, self.num_heads, self.head_dim))
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        probs = self.attention_probabilities(query, key)
        weights = self.attention_dropout_layer(ops.cast(probs, value.dtype), training=training)
        out = ops.einsum("bhqk,bkhd->bqhd", weights, value)
        out = ops.reshape(out, (-1, out.shape[1] or batch_tokens[1], self.num_heads * self.head_dim))
        out = self.output_dropout_layer(self.output_projection(out), training=training)
        if return_attention_scores:
            return out, probs
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            diagonal_mask=self.diagonal_mask,
            learnable_temperature=self.learnable_temperature,
            suppression=self.suppression,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            use_qkv_bias=self.use_qkv_bias,
            output_dim=self.output_dim,
            attention_scale=self.attention_scale,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class LocalitySelfAttention(MultiHeadSelfAttention):
    """Locality Self-Attention (LSA, Lee et al. 2021).

    `MultiHeadSelfAttention` with diagonal masking and a learnable per-head
    temperature initialised to `head_dim ** -0.5`, so at initialisation and
    without the mask it is standard scaled dot-product attention. Same
    arguments as `MultiHeadSelfAttention`; `diagonal_mask` and
    `learnable_temperature` default to True.
    """

    def __init__(self, num_heads, head_dim, diagonal_mask=True, learnable_temperature=True, **kwargs):
        super().__init__(
            num_heads,
            head_dim,
            diagonal_mask=diagonal_mask,
            learnable_temperature=learnable_temperature,
            **kwargs,
        )
