"""Multi-head self-attention with the hooks the small-dataset papers need."""

import keras
from keras import ops

from keras_smallvit.layers.suppression import TrivialAttentionSuppression
from keras_smallvit.layers.suppression import fused_form_is_faster
from keras_smallvit.layers.techniques import suppression_config
from keras_smallvit.utils import legacy
from keras_smallvit.utils.validation import check_input_shape
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

# `return_attention_scores` values: no maps, the weights, or all three maps.
RETURN_MODES = (False, True, "all")
# The keys of the maps `return_attention_scores="all"` returns.
ATTENTION_MAPS = ("before_suppression", "after_suppression", "weights")


def check_return_mode(return_attention_scores):
    """Validates a `return_attention_scores` call argument (see `RETURN_MODES`)."""
    if not (isinstance(return_attention_scores, bool) or return_attention_scores == "all"):
        raise ValueError(
            f"Invalid `return_attention_scores`: {return_attention_scores!r}. Allowed values: False, True, 'all'."
        )
    return return_attention_scores


def with_attention_scores(out, maps, mode):
    """`out`, `(out, maps["weights"])` or `(out, maps)` for `mode` False, True or "all"."""
    if mode is True:
        return out, maps["weights"]
    if mode == "all":
        return out, maps
    return out


def attention_output_spec(out, shape, mode):
    """`compute_output_spec` of a layer returning `out` and float32 maps of
    `shape` as `return_attention_scores=mode` asks (see `with_attention_scores`)."""
    maps = {key: keras.KerasTensor(shape, dtype="float32") for key in ATTENTION_MAPS}
    return with_attention_scores(out, maps, check_return_mode(mode))


# The most negative finite float16: finite in every float dtype, and softmax
# gives exactly 0 where it is written over (or added to) a float32 score.
MASK_VALUE = -65504.0

@keras.saving.register_keras_serializable(package="keras_smallvit")
@legacy.loads_old_configs("attention")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention with explicit float32 scores and softmax.

    `scores = (q * scale_h) k^T` per head; with `diagonal_mask` a large
    negative finite value is added to each token's score with itself (LSA,
    its probability is then exactly 0); softmax
    in float32; optional SATA on the probabilities; then `probs @ v`, a Dense
    output projection and dropout. q, k and v come from one Dense without bias
    (as in the official code), laid out `[q | k | v]`, each `(heads, head_dim)`.

    `scale_h` is `temperature_multiple * attention_scale` (`attention_scale`
    defaults to `head_dim ** -0.5`), or with `learnable_temperature` a
    trainable per-head vector initialised to that value (LSA; weight decay
    applies to it as in the official code).

    Override points (q, k, v are heads-first, `(B, heads, N, head_dim)`, from
    `query_key_value(inputs)`): `attention_scores(query, key)` (the scaled
    float32 scores before masking, e.g. to mix heads or add a bias),
    `masked_scores(query, key)` (the scores after the mask),
    `masked_softmax(query, key)` (their softmax: before SATA),
    `mix_heads(probs)` (after SATA, e.g. talking heads) and
    `combine_heads(weights, value)`.

    Call args:
        inputs: `(B, N, dim)`.
        return_attention_scores: if True, also returns the attention
            probabilities `(B, heads, N, N)` in float32, after masking and SATA
            (before attention dropout). With `"all"`, returns `(outputs,
            maps)`, `maps` a dict of float32 `(B, heads, N, N)` tensors:
            `"before_suppression"` (softmax after the masks), `"after_suppression"`
            (then SATA; the same tensor without it) and `"weights"` (what
            multiplies the values: `"after_suppression"` here, after the
            talking-heads mixing in CaiT). Keras' `MultiHeadAttention` style:
            the layer says what it returns, nothing patches it.
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
        temperature_multiple: `k > 0` multiplying that scale (SATA paper
            Table 6: `tau = k / sqrt(head_dim)`); 1 by default.
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
        temperature_multiple=1.0,
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
        self.temperature_multiple = check_range(
            "temperature_multiple", temperature_multiple, 0.0, None, low_inclusive=False
        )

    @property
    def default_scale(self):
        """The softmax scale (the learned temperature's initial value):
        `temperature_multiple * attention_scale`, `attention_scale` being
        `head_dim ** -0.5` when it is None."""
        scale = self.head_dim**-0.5 if self.attention_scale is None else self.attention_scale
        return self.temperature_multiple * scale

    def build(self, input_shape):
        # A rank-4 input would be flattened into the batch by the qkv reshape
        # (a silently wrong result), a rank-2 one fail in it.
        dim = check_input_shape(self, input_shape, ("batch", "tokens", "dim"), known=(2,))[-1]
        # Every later call is checked by Keras against the built rank and size.
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: dim})
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

    def query_key_value(self, inputs):
        """q, k, v, each `(B, heads, N, head_dim)`, from the one qkv Dense.

        Heads-first, so the score and value products are plain batched
        matmuls on contiguous operands (einsum over `(B, N, heads, dim)`
        transposes its operands and makes the scores non-contiguous, which
        slows every elementwise op on them in eager PyTorch).
        """
        num_tokens = inputs.shape[1] or ops.shape(inputs)[1]
        qkv = ops.reshape(self.qkv(inputs), (-1, num_tokens, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        return qkv[0], qkv[1], qkv[2]

    def merge_heads(self, x):
        """`(B, heads, N, head_dim) -> (B, N, heads * head_dim)`."""
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.reshape(x, (-1, x.shape[1] or ops.shape(x)[1], self.num_heads * self.head_dim))

    def combine_heads(self, weights, value):
        """`weights @ value` with the heads concatenated: `(B, Nq, heads * head_dim)`
        from weights `(B, heads, Nq, Nk)` and value `(B, heads, Nk, head_dim)`."""
        return self.merge_heads(ops.matmul(weights, value))

    def attention_scores(self, query, key):
        """Scaled float32 scores `(B, heads, Nq, Nk)` from `(B, heads, N, head_dim)` q, k.

        Override point for changes before masking and softmax (a bias, head
        mixing).
        """
        if self.learnable_temperature:
            scale = ops.cast(self.temperature, query.dtype)[:, None, None]
        else:
            scale = self.default_scale
        scores = ops.matmul(query * scale, ops.swapaxes(key, -1, -2))
        return ops.cast(scores, "float32")

    def masked_scores(self, query, key):
        """float32 `attention_scores` with LSA's diagonal mask, `(B, heads, Nq, Nk)`:
        what the softmax takes."""
        scores = self.attention_scores(query, key)
        if self.diagonal_mask:
            # Added, not written with `where`: the scores are float32, where
            # MASK_VALUE is far below any score, and an addition's gradient is
            # free (a `where` costs a masked copy forward and backward).
            num_tokens = scores.shape[-1] or ops.shape(scores)[-1]
            scores = scores + ops.eye(num_tokens, dtype="float32") * MASK_VALUE
        return scores

    def masked_softmax(self, query, key):
        """float32 `softmax(masked_scores)`: the probabilities before SATA,
        `(B, heads, Nq, Nk)` (override point: then SATA acts on what this
        returns)."""
        return ops.softmax(self.masked_scores(query, key), axis=-1)

    @property
    def fuses_suppression(self):
        """Whether SATA runs fused with the softmax
        (`TrivialAttentionSuppression.suppress_scores`: same values, about
        half the time under XLA and with PyTorch's fast path). Not where that
        form is slower (`suppression.fused_form_is_faster`: eager PyTorch
        without its fast path), nor where a subclass overrides `masked_softmax`."""
        return (
            self.suppression is not None
            and fused_form_is_faster()
            and type(self).masked_softmax is MultiHeadSelfAttention.masked_softmax
        )

    def mix_heads(self, probs):
        """The weights that multiply the values, from the probabilities after
        SATA (override point: talking heads' post-softmax mixing); identity here."""
        return probs

    def attention_outputs(self, query, key):
        """float32 maps `(B, heads, Nq, Nk)` from `(B, heads, N, head_dim)` q, k:
        a dict of `"before_suppression"` (`masked_softmax`), `"after_suppression"`
        (then SATA; the same tensor without SATA) and `"weights"` (then
        `mix_heads`: what multiplies the values)."""
        if self.fuses_suppression:
            scores = self.masked_scores(query, key)
            # Compiled graphs drop this softmax when no map is returned.
            before = ops.softmax(scores, axis=-1)
            after = self.suppression_layer.suppress_scores(scores)
        else:
            before = self.masked_softmax(query, key)
            after = self.suppression_layer(before) if self.suppression is not None else before
        return {"before_suppression": before, "after_suppression": after, "weights": self.mix_heads(after)}

    def attention_probabilities(self, query, key):
        """The float32 weights `(B, heads, Nq, Nk)` that multiply the values
        (`attention_outputs(query, key)["weights"]`)."""
        return self.attention_outputs(query, key)["weights"]

    def attend(self, query, key, value, training=None):
        """`(heads merged (B, Nq, heads * head_dim), attention_outputs)`:
        the attention before the output projection."""
        outputs = self.attention_outputs(query, key)
        weights = self.attention_dropout_layer(ops.cast(outputs["weights"], value.dtype), training=training)
        return self.combine_heads(weights, value), outputs

    def call(self, inputs, return_attention_scores=False, training=None):
        mode = check_return_mode(return_attention_scores)
        query, key, value = self.query_key_value(inputs)
        out, maps = self.attend(query, key, value, training=training)
        out = self.output_dropout_layer(self.output_projection(out), training=training)
        return with_attention_scores(out, maps, mode)

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
            temperature_multiple=self.temperature_multiple,
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
