"""The contract every layer and model of the package meets (keras-hub style).

`LayerContract` checks: `get_config` round trip, `.keras` save/load with
identical outputs, one `fit` step that moves the trainable weights,
mixed_bfloat16 / mixed_float16 without NaN (with XLA where the backend has
it), and `jit_compile=True` on TensorFlow and JAX.
"""

import os

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
# torch.compile costs ~50 s per model on a 2-core CPU: XLA checks run on TF/JAX.
JIT_BACKENDS = ("tensorflow", "jax")
MIXED_POLICIES = ("mixed_bfloat16", "mixed_float16")


# JAX's eager path compiles every op for every new shape (a tiny model's first
# eager fit step costs ~35 s here); one XLA compile of the step costs ~13 s.
# TF's eager path has no such cost, and its XLA compile does.
FAST_FIT_JIT = BACKEND == "jax"


def mixed_precision_jit(policy):
    """Whether a mixed-precision fit runs under XLA: always on JAX (its fast
    path); on TF for float16 only, the policy whose range breaks mask values
    and needs loss scaling (bfloat16 has float32's range; each TF XLA
    compile of a fit step costs seconds on a 2-core CPU)."""
    return FAST_FIT_JIT or (BACKEND in JIT_BACKENDS and policy == "mixed_float16")


def as_numpy(x):
    return keras.ops.convert_to_numpy(x)


def first_output(outputs):
    """The main tensor of a layer/model output (a tensor, a tuple or a dict)."""
    if isinstance(outputs, dict):
        return outputs["sequence_output"] if "sequence_output" in outputs else next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def wrap_layer(layer_factory, input_shape, dtype=None):
    """A functional model around a fresh layer (its main output, as float32)."""
    inputs = keras.Input(shape=input_shape[1:])
    layer = layer_factory(dtype) if dtype else layer_factory(None)
    outputs = first_output(layer(inputs))
    outputs = keras.layers.Activation("linear", dtype="float32")(outputs)
    return keras.Model(inputs, outputs), layer


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
        expected = as_numpy(model(x))
        path = os.path.join(tmp_path, "model.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        np.testing.assert_allclose(as_numpy(reloaded(x)), expected, atol=self.atol, rtol=0)

    def test_one_fit_step_updates_weights(self):
        x = self.input_data()
        model, layer = wrap_layer(self.layer_factory, x.shape)
        before = [as_numpy(w).copy() for w in layer.trainable_weights]
        loss = fit_one_step(model, x)
        assert np.isfinite(loss).all()
        if self.has_trainable_weights:
            after = [as_numpy(w) for w in layer.trainable_weights]
            assert any(not np.allclose(a, b) for a, b in zip(after, before))

    @pytest.mark.parametrize("policy", MIXED_POLICIES)
    def test_mixed_precision_fit_has_no_nan(self, policy):
        x = self.input_data()
        model, layer = wrap_layer(self.layer_factory, x.shape, dtype=policy)
        assert layer.compute_dtype == policy.split("_")[1]
        loss = fit_one_step(model, x, jit_compile=mixed_precision_jit(policy))
        assert np.isfinite(loss).all()
        assert np.isfinite(as_numpy(model(x))).all()

    @pytest.mark.skipif(BACKEND not in JIT_BACKENDS, reason="XLA is for TF/JAX; torch.compile is too slow for CI")
    def test_jit_compile_matches_eager(self):
        x = self.input_data()
        model, _ = wrap_layer(self.layer_factory, x.shape)
        eager = as_numpy(model(x))
        model.compile(jit_compile=True, loss="mse")
        np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-4, rtol=1e-4)
        assert np.isfinite(fit_one_step(model, x, jit_compile=True)).all()
