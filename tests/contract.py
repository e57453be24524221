"""The contract every layer and model of the package meets (keras-hub style).

`LayerContract` checks: `get_config` round trip, `.keras` save/load with
identical outputs, one `fit` step that moves the trainable weights (under
XLA on TensorFlow and JAX, where the compiled forward pass must also equal
the eager one), and a mixed_bfloat16 / mixed_float16 forward pass that
keeps float32 weights, computes in the half type and gives the float32
layer's outputs to half precision, without NaN.

The cost is one XLA compile of the forward pass and one of the train step
per class on TensorFlow and JAX; mixed precision is checked forward-only
here, and trained (with its gradients and loss scaling) once per backbone
in the model tests (keras-hub's split).
"""

import os

import keras
import numpy as np
import pytest

from keras_smallvit.utils.layers import all_sublayers

BACKEND = keras.backend.backend()
# torch.compile costs ~50 s per model on a 2-core CPU: XLA checks run on TF/JAX.
JIT_BACKENDS = ("tensorflow", "jax")
MIXED_POLICIES = ("mixed_bfloat16", "mixed_float16")


# JAX's eager path compiles every op for every new shape (a tiny model's first
# eager fit step costs ~35 s here); one XLA compile of the step costs ~13 s.
# TF's eager path has no such cost, and its XLA compile does.
FAST_FIT_JIT = BACKEND == "jax"
# Half-precision forward vs float32, as a fraction of the float32 output's
# largest magnitude: float16 keeps 11 significant bits, bfloat16 8.
MIXED_TOLERANCE = {"mixed_float16": 2e-2, "mixed_bfloat16": 8e-2}
# A config's parameter count (and the symbolic shapes or constant initial
# values checked with it) is its architecture's: the full-size models are
# built once, on the torch pass (the quickest to build them), not per backend.
ARCHITECTURE_ONLY = pytest.mark.skipif(
    BACKEND != "torch", reason="a parameter count is the architecture's, the same on every backend: "
    "checked once, on the torch pass (the quickest to build the full-size models)"
)


def as_numpy(x):
    return keras.ops.convert_to_numpy(x)


def inference(model, x):
    """`model(x)` as NumPy; on JAX one XLA compile of the whole forward pass,
    cheaper than its eager mode, which compiles every op for every new
    shape and dtype (mixed precision: every op again)."""
    if BACKEND == "jax":
        return model.predict(x, batch_size=len(x), verbose=0)
    return keras.tree.map_structure(as_numpy, model(x))


def first_output(outputs):
    """The main tensor of a layer/model output (a tensor, a tuple or a dict)."""
    if isinstance(outputs, dict):
        return outputs["sequence_output"] if "sequence_output" in outputs else next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def wrap_layer(layer_factory, input_shape, dtype=None):
    """A functional model around a fresh layer (its main output, as float32),
    and the layer; the model's `raw_output` is the layer's symbolic output."""
    inputs = keras.Input(shape=input_shape[1:])
    layer = layer_factory(dtype) if dtype else layer_factory(None)
    raw = first_output(layer(inputs))
    outputs = keras.layers.Activation("linear", dtype="float32")(raw)
    model = keras.Model(inputs, outputs)
    model.raw_output = raw
    return model, layer


def fit_one_step(model, x, jit_compile=FAST_FIT_JIT, optimizer=None):
    """One SGD step towards a random target; returns the loss history."""
    y = np.random.default_rng(12345).normal(size=as_numpy(model(x)).shape).astype("float32")
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1),
        loss="mse",
        jit_compile=jit_compile,
    )
    return model.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history["loss"]


class LayerContract:
    """Subclass and set `layer_factory(dtype)`, `input_shape` and `input_data()`."""

    input_shape = None
    # False for layers without weights (nothing to move in a fit step).
    has_trainable_weights = True
    atol = 1e-6
    # The dtype of the main output under mixed precision (None: the policy's
    # compute dtype); a layer documented to compute in float32 says so here.
    mixed_output_dtype = None

    def layer_factory(self, dtype):
        raise NotImplementedError

    def input_data(self):
        return np.random.default_rng(0).normal(size=self.input_shape).astype("float32")

    def test_config_round_trip(self):
        layer = self.layer_factory(None)
        config = layer.get_config()
        restored = layer.__class__.from_config(config)
        assert restored.get_config() == config

    def test_saved_and_reloaded_model_gives_identical_outputs(self, tmp_path):
        x = self.input_data()
        model, _ = wrap_layer(self.layer_factory, x.shape)
        expected = inference(model, x)
        path = os.path.join(tmp_path, "model.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        np.testing.assert_allclose(inference(reloaded, x), expected, atol=self.atol, rtol=0)

    def test_fit_step_updates_weights_and_xla_matches_eager(self):
        x = self.input_data()
        model, layer = wrap_layer(self.layer_factory, x.shape)
        before = [as_numpy(w).copy() for w in layer.trainable_weights]
        jit = BACKEND in JIT_BACKENDS
        if jit:
            eager = as_numpy(model(x))
            model.compile(jit_compile=True, loss="mse")
            np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-4, rtol=1e-4)
        loss = fit_one_step(model, x, jit_compile=jit)
        assert np.isfinite(loss).all()
        if self.has_trainable_weights:
            after = [as_numpy(w) for w in layer.trainable_weights]
            assert any(not np.allclose(a, b) for a, b in zip(after, before))

    def test_empty_batch_gives_empty_output(self):
        """A batch of 0 examples (e.g. the last, empty shard of a split)
        gives outputs of batch size 0, each with the shape of the layer's
        symbolic output: one eager call on the empty batch."""
        x = self.input_data()
        layer = self.layer_factory(None)
        symbolic = layer(keras.Input(shape=x.shape[1:], dtype=str(x.dtype)))
        got = layer(x[:0])
        expected_shapes = [tuple(t.shape) for t in keras.tree.flatten(symbolic)]
        got_shapes = [as_numpy(t).shape for t in keras.tree.flatten(got)]
        assert len(got_shapes) == len(expected_shapes)
        for shape, expected in zip(got_shapes, expected_shapes):
            assert len(shape) == len(expected) and shape[0] == 0, (shape, expected)
            assert all(e is None or s == e for s, e in zip(shape[1:], expected[1:])), (shape, expected)

    @pytest.mark.parametrize("policy", MIXED_POLICIES)
    def test_mixed_precision_forward_matches_float32(self, policy):
        x = self.input_data()
        full, full_layer = wrap_layer(self.layer_factory, x.shape)
        half, half_layer = wrap_layer(self.layer_factory, x.shape, dtype=policy)
        half_type = policy.split("_")[1]
        assert half_layer.compute_dtype == half_type
        assert all(w.dtype == "float32" for w in half_layer.weights), "weights stay float32"
        half_layer.set_weights(full_layer.get_weights())
        # On JAX the symbolic output's dtype (an eager call compiles every op
        # again in the half type); elsewhere the eager call's, which is cheap
        # (torch's symbolic trace of T2TAttention(residual="value") says float32).
        raw = half.raw_output if BACKEND == "jax" else first_output(half_layer(x))
        assert keras.backend.standardize_dtype(raw.dtype) == (self.mixed_output_dtype or half_type)
        want, got = inference(full, x), inference(half, x)
        assert np.isfinite(got).all()
        error = np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-6)
        assert error <= MIXED_TOLERANCE[policy], f"{policy} differs from float32 by {error:.3g} of its range"


class ModelContract:
    """The checks every classifier (a backbone and its head) meets, each paying
    at most one XLA compile of the train step and one of the forward pass.

    Subclass and set `model_factory(dtype, **kwargs)`; `data()` gives a fixed
    batch `(x, y)` the model can overfit. `mixed_kwargs` picks the variant
    trained under mixed_float16 (e.g. another pooling); `half_layers` names
    layers (searched in the model, then in its `backbone`) that must compute
    in the half type.
    """

    fit_epochs = 8
    batch_size = 4
    mixed_kwargs = {}
    half_layers = ()
    reload_atol = 1e-6
    # True: every trainable weight must move in the fit (not only the loss fall).
    all_weights_move = False

    def model_factory(self, dtype=None, **kwargs):
        raise NotImplementedError

    def data(self, n=8, num_classes=5, image_size=16):
        rng = np.random.default_rng(0)
        return rng.uniform(size=(n, image_size, image_size, 3)).astype("float32"), rng.integers(0, num_classes, size=(n,))

    def compile_and_fit(self, model, jit_compile, epochs):
        x, y = self.data()
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        return model.fit(x, y, batch_size=self.batch_size, epochs=epochs, verbose=0).history["loss"]

    def find_layer(self, model, name):
        try:
            return model.get_layer(name)
        except ValueError:
            return model.backbone.get_layer(name)

    def test_fit_reduces_loss_xla_matches_eager_and_reload_is_identical(self, tmp_path):
        model = self.model_factory()
        # Every layer built with the model: Keras runs a model with an unbuilt
        # layer eagerly once before its first predict/fit step (on JAX that
        # compiles every op: seconds).
        unbuilt = [f"{type(layer).__name__} {layer.name!r}" for layer in all_sublayers(model) if not layer.built]
        assert not unbuilt, unbuilt
        before = [as_numpy(v).copy() for v in model.trainable_weights]
        # Under XLA on TF/JAX: the compiled train step and forward pass are
        # checked here, once per model.
        losses = self.compile_and_fit(model, jit_compile=BACKEND in JIT_BACKENDS, epochs=self.fit_epochs)
        assert np.isfinite(losses).all() and losses[-1] < losses[0]
        if self.all_weights_move:
            assert all(not np.allclose(as_numpy(v), b) for v, b in zip(model.trainable_weights, before))
        x, _ = self.data()
        x = x[:4]
        # `inference`: on JAX the compiled forward pass (its eager mode compiles
        # every op of a new model: ~9 s for Swin), so JAX's XLA-vs-eager check
        # is the per-layer one in `LayerContract`; TF compares both here.
        expected = inference(model, x)
        path = os.path.join(tmp_path, "model.keras")
        model.save(path)  # trained weights and optimizer state
        reloaded = keras.saving.load_model(path)
        assert type(reloaded) is type(model) and reloaded.get_config() == model.get_config()
        if hasattr(model, "backbone"):
            assert type(reloaded.backbone) is type(model.backbone)
        np.testing.assert_allclose(inference(reloaded, x), expected, atol=self.reload_atol, rtol=0)
        if BACKEND == "tensorflow":
            np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-4, rtol=1e-4)

    def test_mixed_float16_fit_has_no_nan_and_float32_logits(self):
        # float16: the policy whose range breaks mask values and needs loss
        # scaling (each layer's contract checks the forward pass of both half
        # types). FAST_FIT_JIT: TF's XLA compile of this step cost up to 25 s
        # per model, its graph mode ~3 s; the float32 fit keeps XLA there.
        model = self.model_factory(dtype="mixed_float16", **self.mixed_kwargs)
        for name in self.half_layers:
            assert self.find_layer(model, name).compute_dtype == "float16", name
        losses = self.compile_and_fit(model, jit_compile=FAST_FIT_JIT, epochs=1)
        # A NaN or inf in the logits would make the loss non-finite.
        assert np.isfinite(losses).all()
        assert model.outputs[0].dtype == "float32"
        self.check_mixed_model(model)

    def check_mixed_model(self, model):
        """Override point: more checks of the float16 model after its fit step."""

    def test_mixed_bfloat16_forward_matches_float32(self):
        full = self.model_factory(**self.mixed_kwargs)
        half = self.model_factory(dtype="mixed_bfloat16", **self.mixed_kwargs)
        for name in self.half_layers:
            assert self.find_layer(half, name).compute_dtype == "bfloat16", name
        assert all(w.dtype == "float32" for w in half.weights), "weights stay float32"
        half.set_weights(full.get_weights())
        x, _ = self.data()
        x = x[:2]
        want, got = inference(full, x), inference(half, x)
        assert got.dtype == np.float32 and np.isfinite(got).all()
        error = np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-6)
        assert error <= MIXED_TOLERANCE["mixed_bfloat16"], f"bfloat16 differs from float32 by {error:.3g} of its range"


def with_techniques(arguments):
    """`arguments` of a backbone or block with the technique options among
    them (`attention="lsa"`, ...) gathered into one
    `techniques=TechniqueSpec(...)`, the one argument constructors take."""
    from keras_smallvit.layers.techniques import TechniqueSpec

    fields = {k: v for k, v in arguments.items() if k in TechniqueSpec.field_names()}
    rest = {k: v for k, v in arguments.items() if k not in fields}
    if fields:
        rest["techniques"] = TechniqueSpec.resolve(rest.get("techniques"), **fields)
    return rest
