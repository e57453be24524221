"""Multi-head self-attention with the hooks the small-dataset papers need."""

import contextlib

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

# `use_fused_attention`'s switch (on unless a caller turns it off).
_FUSED_ATTENTION = [True]


@contextlib.contextmanager
def use_fused_attention(enabled=True):
    """Within the block, `MultiHeadSelfAttention` may take its fused path
    (True, what happens outside any block) or always takes the explicit one
    (False): for side-by-side measurements and tests.

    Read when a layer is called: a compiled function keeps the path it was
    traced with, so build and compile the model inside the block.

    Args:
        enabled: whether the fused path may run.
    """
    previous = _FUSED_ATTENTION[0]
    _FUSED_ATTENTION[0] = bool(enabled)
    try:
        yield
    finally:
        _FUSED_ATTENTION[0] = previous


_ON_CPU = {}


def computes_on_cpu():
    """Whether Keras computes on the CPU (its first device)."""
    if "answer" not in _ON_CPU:
        if keras.backend.backend() != "torch":
            _ON_CPU["answer"] = str(keras.distribution.list_devices()[0]).lower().startswith("cpu")
        else:
            # Keras' torch backend has no distribution API: where a new tensor
            # lives. Not kept when asked while Keras infers shapes on torch's
            # "meta" device (either form has the same output shapes).
            device = str(ops.zeros(()).device)
            if device == "meta":
                return True
            _ON_CPU["answer"] = device.startswith("cpu")
    return _ON_CPU["answer"]


def backend_fuses(dtype, training=None):
    """Whether `keras.ops.dot_product_attention` runs here, and pays, for
    inputs of `dtype`: on accelerators always; on the CPU only in float32,
    and on JAX's CPU not in training. Measured on a 2-core AMD EPYC
    (`avx512_bf16`), 64 px ViT, batch 64: torch in mixed_bfloat16 trains at
    74 img/s fused vs 164 explicit (infers 381 vs 438), float32 even (99 vs
    101); JAX's fused backward pass is slower in float32 too (one layer:
    82 vs 56 ms forward + backward); and XLA:CPU refuses the kernel's float16
    dots with float32 results (`F16_F16_F32`) at compile time."""
    if not computes_on_cpu():
        return True
    if keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16"):
        return False
    return keras.backend.backend() != "jax" or not training


def add_grouped(scores, term):
    """`scores + term`: `scores` `(batch, heads, Nq, Nk)` and `term` `(groups,
    heads or 1, Nq, Nk)`, `groups` dividing `batch` (batch entry `b` takes
    group `b % groups`; 1: every entry)."""
    groups = term.shape[0]
    if groups == 1:
        return scores + term
    grouped = ops.reshape(scores, (-1, groups, *scores.shape[1:]))
    return ops.reshape(grouped + term[None], (-1, *scores.shape[1:]))


def additive_mask(mask):
    """A boolean mask (True: attend) as a float32 term: 0 or `MASK_VALUE`."""
    return ops.cast(ops.where(mask, 0.0, MASK_VALUE), "float32")


def attention_softmax(scores, bias=None, dtype="float32"):
    """`softmax(float32(scores) + bias)` over the last axis, in `dtype`: the
    explicit attention's softmax (SATA's fused form,
    `TrivialAttentionSuppression.suppress_scores`, takes the same arguments).

    Args:
        scores: the attention scores, any float dtype.
        bias: None, or a float32 term broadcasting against the scores (masks
            as `MASK_VALUE`).
        dtype: the dtype of the result.
    """
    scores = ops.cast(scores, "float32")
    if bias is not None:
        scores = scores + ops.cast(bias, "float32")
    return ops.cast(ops.softmax(scores, axis=-1), dtype)


def combined_term(bias, mask):
    """The bias and the mask as one additive float32 term, or None: what the
    softmax kernels take. Masked entries get `bias + MASK_VALUE`, still far
    below any score (probability exactly 0)."""
    term = None if bias is None else ops.cast(bias, "float32")
    if mask is not None:
        masked = additive_mask(mask)
        term = masked if term is None else term + masked
    return term


@keras.saving.register_keras_serializable(package="keras_smallvit")
@legacy.loads_old_configs("attention")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention: explicit float32 scores and softmax, or the
    fused `keras.ops.dot_product_attention` where nothing needs them.

    Per head, `scores = (q * scale_h) k^T + bias`, masked (LSA's diagonal, a
    subclass's masks) with a large negative finite value so that its
    probability is exactly 0; softmax in float32; optional SATA on the
    probabilities; then `probs @ v`, a Dense output projection and dropout.
    q, k and v come from one Dense without bias (as in the official code),
    laid out `[q | k | v]`, each `(heads, head_dim)`.

    `scale_h` is `temperature_multiple * attention_scale` (`attention_scale`
    defaults to `head_dim ** -0.5`), or with `learnable_temperature` a
    trainable per-head vector initialised to that value (LSA; weight decay
    applies to it as in the official code).

    One attention computation, `compute_attention`, in two forms:
    - explicit (the reference): the scores, the softmax in float32, SATA and
      any head mixing written out; the only form that gives the maps;
    - fused: `keras.ops.dot_product_attention` with the scale folded into q
      (`scale=1`), the masks as its boolean `mask`, a bias (with any mask
      written into it) as its `bias`. Taken when nothing needs the explicit
      form: no maps asked, no SATA, no head mixing, no attention dropout in
      training, `use_fused_attention` not switched off, and where the
      backend's kernel runs and pays (`backend_fuses`: on the CPU only in
      float32, and on JAX's CPU not in training). The
      same outputs and gradients to float round-off (tested on every backend,
      in float32 and half precision, with masks and biases).
    The choice follows from the layer's configuration
    (`uses_fused_attention`), never from which methods a subclass overrides.

    What a subclass may override (both forms read the same hooks):
    - `attention_bias(num_queries, num_keys)`, the scores hook: a float32
      bias added to the scaled scores and a boolean mask (True: attend), e.g.
      Swin's relative position bias and shift mask;
    - `head_mixing()`, the head-mixing hook: `(heads, heads)` matrices mixing
      the heads' scores before the softmax and their probabilities after SATA
      (CaiT's talking heads);
    - `output_residual(inputs, value)`: what the layer adds to its projected
      output (T2T's skip connections).

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
        context: optional `(B, Nk, dim)` tokens to attend over (cross
            attention, CaiT's class attention): the keys and values come from
            `context` through the same qkv Dense, the queries from `inputs`.
            Not with `diagonal_mask` (there is no diagonal).

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
                autocast=False,  # read in float32 under mixed precision
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

    # === The hooks ===

    def attention_bias(self, num_queries, num_keys):
        """The scores hook: `(bias, mask)`, each None or a 4-D tensor (or
        NumPy array) `(groups, heads or 1, num_queries, num_keys)`: a float32
        bias added to the scaled scores, and a boolean mask (True: attend;
        False: probability exactly 0). `groups` is 1 (every batch entry) or
        divides the attention's batch, entry `b` taking group `b % groups`
        (Swin's windows, the window index varying fastest). Every row must
        keep at least one key.

        Here: no bias; with `diagonal_mask` (LSA) each query's own key masked.
        """
        if not self.diagonal_mask:
            return None, None
        mask = ops.not_equal(ops.arange(num_queries)[:, None], ops.arange(num_keys)[None, :])
        return None, mask[None, None]

    def head_mixing(self):
        """The head-mixing hook: `(pre_softmax, post_softmax)`, each None or a
        `(heads, heads)` matrix `W` mixing the heads, `x'_g = sum_h x_h W[h, g]`:
        of the scores (after the bias, before the mask) and of the
        probabilities after SATA (the weights that multiply the values).
        None, None here."""
        return None, None

    def output_residual(self, inputs, value):
        """What the layer adds to its projected output (after the output
        dropout), from its `inputs` and the values `(B, N, heads, head_dim)`:
        None here (T2T's attention adds `inputs` or the values)."""
        return None

    # === The computation ===

    def query_key_value(self, inputs):
        """q, k, v, each `(B, N, heads, head_dim)`, from the one qkv Dense:
        a reshape and an unstack, no transpose (the fused kernel takes this
        layout; the explicit form transposes to heads first itself). An
        unstack, not three slices: on PyTorch each slice's gradient is a
        zero-filled copy of the whole projection, the unstack's one stack."""
        num_tokens = inputs.shape[1] or ops.shape(inputs)[1]
        qkv = ops.reshape(self.qkv(inputs), (-1, num_tokens, 3, self.num_heads, self.head_dim))
        query, key, value = ops.unstack(qkv, num=3, axis=2)
        return query, key, value

    def uses_fused_attention(self, dtype, return_maps=False, training=None):
        """Whether `compute_attention` takes the fused form for inputs of
        `dtype`: not when the maps are asked, with SATA, with head mixing or
        with attention dropout in training (what only the explicit form
        computes), nor inside `use_fused_attention(False)`, nor where the
        backend's kernel refuses the dtype or is slower (`backend_fuses`:
        the CPU in half precision, JAX's CPU in training)."""
        if return_maps or self.suppression is not None or not _FUSED_ATTENTION[0]:
            return False
        if training and self.attention_dropout > 0:
            return False
        if any(matrix is not None for matrix in self.head_mixing()):
            return False
        return backend_fuses(dtype, training)

    def compute_attention(self, query, key, value, return_maps=False, training=None):
        """The attention of `(B, N, heads, head_dim)` q, k, v (as from
        `query_key_value`): `(attended, maps)`, `attended` the heads merged
        `(B, Nq, heads * head_dim)` before the output projection, `maps` the
        float32 dict of the call's `"all"` mode with `return_maps`, else None.
        Fused or explicit (see the class docstring)."""
        if self.learnable_temperature:
            # The product in float32, rounded once: more exact in half
            # precision, and PyTorch's fast loop (a bfloat16 product with a
            # per-head vector ran ~5x slower there: 1.2 vs 0.23 ms, batch 64).
            temperature = ops.cast(self.temperature, "float32")[:, None]
            query = ops.cast(ops.cast(query, "float32") * temperature, query.dtype)
        else:
            query = query * self.default_scale
        num_queries = query.shape[1] or ops.shape(query)[1]
        bias, mask = self.attention_bias(num_queries, key.shape[1] or ops.shape(key)[1])
        if self.uses_fused_attention(query.dtype, return_maps, training):
            attended = self._fused_attention(query, key, value, bias, mask)
            maps = None
        else:
            attended, maps = self._explicit_attention(query, key, value, bias, mask, return_maps, training)
        return ops.reshape(attended, (-1, num_queries, self.num_heads * self.head_dim)), maps

    def _fused_attention(self, query, key, value, bias, mask):
        # A mask alone and shared by the batch stays the kernel's boolean
        # `mask`; with a bias, or per group, it is written into the one
        # additive term (PyTorch's kernel takes a mask or a bias, not both).
        if bias is not None or (mask is not None and mask.shape[0] != 1):
            bias, mask = combined_term(bias, mask), None
            groups = bias.shape[0]
            if groups != 1:
                # The batch, from the batch entries themselves (a symbolic batch size is unknown).
                anchor = ops.zeros_like(ops.reshape(query[:, :1, :1, :1], (-1, groups, 1, 1, 1)), dtype="float32")
                bias = ops.reshape(anchor + bias[None], (-1, *bias.shape[1:]))
        return ops.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=1.0)

    def _explicit_attention(self, query, key, value, bias, mask, return_maps, training):
        # Heads first: the score and value products are plain batched matmuls.
        query = ops.transpose(query, (0, 2, 1, 3))
        value = ops.transpose(value, (0, 2, 1, 3))
        scores = ops.matmul(query, ops.transpose(key, (0, 2, 3, 1)))
        pre_softmax, post_softmax = self.head_mixing()
        if pre_softmax is not None:
            # The mixing sits between the bias and the mask.
            scores = ops.cast(scores, "float32")
            if bias is not None:
                scores = add_grouped(scores, ops.cast(bias, "float32"))
            scores = ops.einsum("bhqk,hg->bgqk", scores, ops.cast(pre_softmax, "float32"))
            bias = None
        # The mask is added, not written with `where`: the scores are float32,
        # where MASK_VALUE is far below any score, and an addition's gradient
        # is free (a `where` costs a masked copy forward and backward).
        term = combined_term(bias, mask)
        if term is not None and term.shape[0] != 1:
            # Per-group terms (Swin's windows) are added here; a term shared by
            # the whole batch goes into the softmax kernel with the casts.
            scores, term = add_grouped(ops.cast(scores, "float32"), term), None
        # Straight into the values' dtype where nothing else reads the maps.
        direct = not return_maps and post_softmax is None
        maps_dtype = value.dtype if direct else "float32"
        before = None
        if self.suppression is not None and fused_form_is_faster():
            # SATA fused with the softmax (`suppress_scores`: the same values,
            # about half the time under XLA and with PyTorch's fast path);
            # eager PyTorch without it is faster with the softmax kernel and
            # SATA's own gradient (`suppression.fused_form_is_faster`).
            after = self.suppression_layer.suppress_scores(scores, term, maps_dtype)
            if return_maps:
                before = attention_softmax(scores, term)
        else:
            before = attention_softmax(scores, term, "float32" if self.suppression is not None else maps_dtype)
            after = before if self.suppression is None else self.suppression_layer(before)
        weights = after
        if post_softmax is not None:
            weights = ops.einsum("bhqk,hg->bgqk", after, ops.cast(post_softmax, "float32"))
        dropped = self.attention_dropout_layer(ops.cast(weights, value.dtype), training=training)
        attended = ops.transpose(ops.matmul(dropped, value), (0, 2, 1, 3))
        maps = None
        if return_maps:
            maps = {"before_suppression": before, "after_suppression": after, "weights": weights}
        return attended, maps

    def call(self, inputs, return_attention_scores=False, training=None, context=None):
        mode = check_return_mode(return_attention_scores)
        query, key, value = self.query_key_value(inputs)
        if context is not None:
            if self.diagonal_mask:
                raise ValueError(
                    "`diagonal_mask=True` is for self-attention; attention over a "
                    "`context` input (class attention) has no diagonal. Use diagonal_mask=False."
                )
            _, key, value = self.query_key_value(context)
        attended, maps = self.compute_attention(query, key, value, return_maps=bool(mode), training=training)
        out = self.output_dropout_layer(self.output_projection(attended), training=training)
        residual = self.output_residual(inputs, value)
        if residual is not None:
            out = out + residual
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
