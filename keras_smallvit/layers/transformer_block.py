"""Pre-norm transformer encoder block with the small-dataset techniques as options."""

import keras

from keras_smallvit.layers.attention import LocalitySelfAttention
from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.attention import suppression_config
from keras_smallvit.layers.context_broadcasting import ContextBroadcasting
from keras_smallvit.layers.stochastic_depth import StochasticDepth
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

ATTENTION_TYPES = {"standard": MultiHeadSelfAttention, "lsa": LocalitySelfAttention}
CONTEXT_BROADCASTING_POSITIONS = ("mlp_output", "attention_output", "block_output")
_CB_ARGS = ("ratio", "learnable_scale")


def context_broadcasting_config(context_broadcasting):
    """Normalises a `context_broadcasting` argument to `None` or a kwargs dict.

    Accepts `None`, `True` (ratio 0.5), a dict of `ContextBroadcasting`
    arguments, or a `ContextBroadcasting` instance.
    """
    if context_broadcasting is None or context_broadcasting is False:
        return None
    if context_broadcasting is True:
        return {}
    if isinstance(context_broadcasting, ContextBroadcasting):
        config = context_broadcasting.get_config()
        return {k: config[k] for k in _CB_ARGS}
    if isinstance(context_broadcasting, dict):
        unknown = sorted(set(context_broadcasting) - set(_CB_ARGS))
        if unknown:
            raise ValueError(
                f"Invalid `context_broadcasting` keys {unknown}. Allowed keys: "
                f"{', '.join(_CB_ARGS)}."
            )
        ContextBroadcasting(**context_broadcasting)  # validates the values now
        return dict(context_broadcasting)
    raise ValueError(
        f"Invalid `context_broadcasting`: {context_broadcasting!r}. Allowed values: "
        "None, True, a dict of ContextBroadcasting arguments, or a "
        "ContextBroadcasting layer."
    )


@keras.saving.register_keras_serializable(package="keras_smallvit")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm encoder block: `x + DP(Attn(LN(x)))`, then `x + DP(MLP(LN(x)))`.

    The MLP is Dense(mlp_dim, GELU) -> Dropout -> Dense(dim) -> Dropout. DP is
    stochastic depth. Context broadcasting, when on, sits at
    `context_broadcasting_position`:
    - `"mlp_output"` (default, the common placement): after the MLP's last
      dropout, before drop path and the residual add;
    - `"attention_output"`: the same place on the attention branch;
    - `"block_output"`: after the second residual add.

    Call args:
        inputs: `(B, N, dim)`.
        return_attention_scores: also return the attention probabilities
            `(B, heads, N, N)` (float32).
        training: dropout / drop-path switch.

    Args:
        num_heads: attention heads.
        head_dim: size of each head.
        mlp_ratio: MLP hidden size as a multiple of the input size.
        attention: `"standard"` or `"lsa"` (diagonal mask + learned temperature).
        suppression: SATA settings for the attention (see
            `MultiHeadSelfAttention`), or None.
        context_broadcasting: CB settings (`True`, or a dict with `ratio`,
            `learnable_scale`), or None.
        context_broadcasting_position: where CB acts (see above).
        drop_path_rate: stochastic depth rate of both branches.
        dropout: dropout after the attention projection and in the MLP.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon (PyTorch's default, 1e-5).
        use_qkv_bias: bias in the qkv projection.
        seed: seed of the drop-path randomness.
    """

    def __init__(
        self,
        num_heads,
        head_dim,
        mlp_ratio=2.0,
        attention="standard",
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
        self.attention = check_choice("attention", attention, tuple(ATTENTION_TYPES))
        self.context_broadcasting = context_broadcasting_config(context_broadcasting)
        self.context_broadcasting_position = check_choice(
            "context_broadcasting_position",
            context_broadcasting_position,
            CONTEXT_BROADCASTING_POSITIONS,
        )
        self.drop_path_rate = check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_inclusive=False)
        self.dropout = check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.attention_dropout = check_range(
            "attention_dropout", attention_dropout, 0.0, 1.0, high_inclusive=False
        )
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_qkv_bias = bool(use_qkv_bias)
        self.seed = seed
        self.suppression = suppression_config(suppression)

    def build(self, input_shape):
        dim = input_shape[-1]
        mlp_dim = int(dim * self.mlp_ratio)
        policy = self.dtype_policy
        eps = self.layer_norm_epsilon
        self.attention_norm = keras.layers.LayerNormalization(epsilon=eps, dtype=policy, name="attention_norm")
        self.attention_norm.build(input_shape)
        self.attention_layer = self.make_attention_layer()
        self.attention_layer.build(input_shape)
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=eps, dtype=policy, name="mlp_norm")
        self.mlp_norm.build(input_shape)
        self.mlp_dense_1 = keras.layers.Dense(mlp_dim, activation="gelu", dtype=policy, name="mlp_dense_1")
        self.mlp_dense_1.build(input_shape)
        self.mlp_dense_2 = keras.layers.Dense(dim, dtype=policy, name="mlp_dense_2")
        self.mlp_dense_2.build(tuple(input_shape[:-1]) + (mlp_dim,))
        self.mlp_dropout_1 = keras.layers.Dropout(self.dropout, dtype=policy)
        self.mlp_dropout_2 = keras.layers.Dropout(self.dropout, dtype=policy)
        self.drop_path = StochasticDepth(self.drop_path_rate, seed=self.seed, dtype=policy, name="drop_path")
        self.context_broadcasting_layer = None
        if self.context_broadcasting is not None:
            self.context_broadcasting_layer = ContextBroadcasting(
                **self.context_broadcasting, dtype=policy, name="context_broadcasting"
            )
            self.context_broadcasting_layer.build(input_shape)

    def make_attention_layer(self):
        """The attention sub-layer, not yet built (override point).

        Subclasses return another attention (e.g. shifted-window attention);
        it must take `(B, N, dim)`, return `(B, N, dim)` and, with
        `return_attention_scores=True`, also its float32 probabilities.
        """
        return ATTENTION_TYPES[self.attention](
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            suppression=self.suppression,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            use_qkv_bias=self.use_qkv_bias,
            dtype=self.dtype_policy,
            name="attention",
        )

    def _broadcast_at(self, position, x):
        if self.context_broadcasting_layer is not None and self.context_broadcasting_position == position:
            return self.context_broadcasting_layer(x)
        return x

    def call(self, inputs, return_attention_scores=False, training=None):
        branch, probs = self.attention_layer(
            self.attention_norm(inputs), return_attention_scores=True, training=training
        )
        branch = self._broadcast_at("attention_output", branch)
        x = inputs + self.drop_path(branch, training=training)
        branch = self.mlp_dropout_1(self.mlp_dense_1(self.mlp_norm(x)), training=training)
        branch = self.mlp_dropout_2(self.mlp_dense_2(branch), training=training)
        branch = self._broadcast_at("mlp_output", branch)
        x = x + self.drop_path(branch, training=training)
        x = self._broadcast_at("block_output", x)
        if return_attention_scores:
            return x, probs
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            mlp_ratio=self.mlp_ratio,
            attention=self.attention,
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
