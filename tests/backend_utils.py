"""Test-only helpers: the backend's own autodiff, comparisons of saved runs."""

import os

import keras
import numpy as np


def gradients(fn, variables_or_inputs, jit=False):
    """Gradients of the scalar `fn(*tensors)` with respect to each tensor.

    `variables_or_inputs` are NumPy arrays (turned into backend tensors) or
    `keras.Variable`s. `jit`: on JAX, one compile of the gradient (its eager
    mode compiles every op on first use, for every shape and dtype).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [v.value if isinstance(v, keras.Variable) else tf.constant(v) for v in variables_or_inputs]
        with tf.GradientTape() as tape:
            for x in xs:
                tape.watch(x)
            y = fn(*xs)
        # A gather's gradient comes as IndexedSlices: dense, as the others.
        return [np.asarray(tf.convert_to_tensor(g)) for g in tape.gradient(y, xs)]
    if backend == "jax":
        import jax

        xs = [v.value if isinstance(v, keras.Variable) else np.asarray(v) for v in variables_or_inputs]
        grad = jax.grad(lambda *a: fn(*a), argnums=tuple(range(len(xs))))
        return [np.asarray(g) for g in (jax.jit(grad) if jit else grad)(*xs)]
    if backend == "torch":
        import torch

        xs = [
            v.value.detach().clone().requires_grad_(True)
            if isinstance(v, keras.Variable)
            else torch.tensor(np.asarray(v), requires_grad=True)
            for v in variables_or_inputs
        ]
        y = fn(*xs)
        grads = torch.autograd.grad(y, xs)
        return [g.detach().cpu().numpy() for g in grads]
    raise NotImplementedError(backend)


def assert_same_saved_weights(workdir_a, workdir_b, atol=1e-6):
    """The `last.keras` models of two run folders hold the same weights
    (a resumed run against an uninterrupted one)."""
    a = keras.saving.load_model(os.path.join(workdir_a, "last.keras"))
    b = keras.saving.load_model(os.path.join(workdir_b, "last.keras"))
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wb), atol=atol)


def tree_contents(path):
    """`{relative path: bytes}` of every file under `path` (to prove a folder is unchanged)."""
    return {
        os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(path) for f in files
    }


def compiled(fn):
    """`fn` compiled as the backend's training/predict steps are (XLA on
    TensorFlow and JAX); PyTorch: `fn` itself (its steps run eagerly here,
    torch.compile costs ~50 s a model on a 2-core CPU)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn
