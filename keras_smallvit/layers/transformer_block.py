"""Pre-norm transformer encoder block: the block factory of the techniques."""

import keras

from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.attention import check_return_mode
from keras_smallvit.layers.stochastic_depth import StochasticDepth
from keras_smallvit.layers.techniques import TechniqueSpec
from keras_smallvit.utils import legacy
from keras_smallvit.utils.validation import check_input_shape
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range


@keras.saving.register_keras_serializable(package="keras_smallvit")
@legacy.loads_old_configs("techniques")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm encoder block: `x + DP(Attn(LN(x)))`, then `x + DP(MLP(LN(x)))`.

    The MLP is Dense(mlp_dim, GELU) -> Dropout -> Dense(dim) -> Dropout. DP is
    stochastic depth. The block is the techniques' factory: its attention
    takes `techniques.attention_options()` (LSA, SATA), and each block
    technique that is on (CB, or one registered with
    `register_block_technique`) adds its layer at its position:
    - `"mlp_output"` (default, CB's common placement): after the MLP's last
      dropout, before drop path and the residual add;
    - `"attention_output"`: the same place on the attention branch;
    - `"block_output"`: after the second residual add.

    Override points: `make_attention_layer()`, `scale_branch(branch, x)`
    (identity; CaiT's LayerScale).

    Call args:
        inputs: `(B, N, dim)`.
        return_attention_scores: also return the attention probabilities
            `(B, heads, N, N)` (float32); `"all"`: the attention's dict of
            maps before and after SATA (see `MultiHeadSelfAttention`).
        training: dropout / drop-path switch.
        **attention_kwargs: passed to the attention (CaiT's `context`).

    Args:
        num_heads: attention heads.
        head_dim: size of each head.
        mlp_ratio: MLP hidden size as a multiple of the input size.
        techniques: a `TechniqueSpec` (or what `TechniqueSpec.resolve`
            takes: names, its config dict, None).
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
        techniques=None,
        drop_path_rate=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-5,
        use_qkv_bias=False,
        seed=None,
        **kwargs,
    ):
        legacy.check_no_old_arguments(type(self), kwargs)
        techniques = TechniqueSpec.resolve(techniques)
        super().__init__(**kwargs)
        self.techniques = techniques
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.mlp_ratio = check_range("mlp_ratio", mlp_ratio, 0.0, None, low_inclusive=False)
        self.drop_path_rate = check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_inclusive=False)
        self.dropout = check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.attention_dropout = check_range(
            "attention_dropout", attention_dropout, 0.0, 1.0, high_inclusive=False
        )
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_qkv_bias = bool(use_qkv_bias)
        self.seed = seed

    # One block layer per technique that is on: no single-token blocks here.
    single_token = False

    def build(self, input_shape):
        dim = check_input_shape(self, input_shape, ("batch", "tokens", "dim"), known=(2,))[-1]
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: dim})
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
        # Built here: a layer not built when the model is makes Keras run the whole
        # model eagerly once before its first compiled predict/fit step.
        self.drop_path.build(input_shape)
        # Each technique layer under its own attribute (`context_broadcasting_layer`
        # for CB): the attribute is its weights' path in saved files. Only the
        # names are listed, so each layer is tracked (and saved) once.
        positions = []
        for attribute, position, layer in self.techniques.block_layers(policy, single_token=self.single_token):
            layer.build(input_shape)
            setattr(self, attribute, layer)
            positions.append((position, attribute))
        self.technique_positions = tuple(positions)

    def make_attention_layer(self):
        """The attention sub-layer, not yet built (override point).

        Subclasses return another attention (e.g. shifted-window attention);
        it must take `(B, N, dim)`, return `(B, N, dim)` and, with
        `return_attention_scores=True`, also its float32 probabilities.
        """
        return MultiHeadSelfAttention(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            **self.techniques.attention_options(),
            **self.attention_arguments(),
        )

    def attention_arguments(self):
        """The attention's arguments that are not techniques."""
        return dict(
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            use_qkv_bias=self.use_qkv_bias,
            dtype=self.dtype_policy,
            name="attention",
        )

    def apply_techniques(self, position, x):
        """`x` through the technique layers at `position`, in registration order."""
        for layer_position, attribute in self.technique_positions:
            if layer_position == position:
                x = getattr(self, attribute)(x)
        return x

    def scale_branch(self, branch, x):
        """Override point: a residual branch's `x` before drop path (`branch`
        is `"attention"` or `"mlp"`); identity here."""
        return x

    def call(self, inputs, return_attention_scores=False, training=None, **attention_kwargs):
        mode = check_return_mode(return_attention_scores)
        branch, maps = self.attention_layer(
            self.attention_norm(inputs),
            return_attention_scores="all" if mode == "all" else True,
            training=training,
            **attention_kwargs,
        )
        branch = self.apply_techniques("attention_output", branch)
        x = inputs + self.drop_path(self.scale_branch("attention", branch), training=training)
        branch = self.mlp_dropout_1(self.mlp_dense_1(self.mlp_norm(x)), training=training)
        branch = self.mlp_dropout_2(self.mlp_dense_2(branch), training=training)
        branch = self.apply_techniques("mlp_output", branch)
        x = x + self.drop_path(self.scale_branch("mlp", branch), training=training)
        x = self.apply_techniques("block_output", x)
        if mode:
            return x, maps
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            mlp_ratio=self.mlp_ratio,
            techniques=self.techniques.get_config(),
            drop_path_rate=self.drop_path_rate,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            use_qkv_bias=self.use_qkv_bias,
            seed=self.seed,
        )
        return config
