"""`keras_smallvit.kernels`: each backend's fast path gives its `keras.ops`
reference's values and gradients (float32 and half-precision inputs), and the
dispatch runs the reference wherever a fast path is absent, off or declines."""

import warnings

import keras
import numpy as np
import pytest

from keras_smallvit import kernels
from keras_smallvit.layers import MultiHeadSelfAttention
from keras_smallvit.layers import TrivialAttentionSuppression
from keras_smallvit.layers.suppression import fused_form_is_faster
from tests import references as ref
from tests.backend_utils import gradients
from tests.contract import BACKEND
from tests.contract import as_numpy

FAST = kernels.fast_paths(BACKEND)
no_fast_path = pytest.mark.skipif(not FAST, reason=f"no fast path is registered on {BACKEND}: its kernels "
                                  "are their keras.ops references (tested in tests/layers/test_suppression.py)")


def kernel_input(name, seed=0):
    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(2, 3, 17, 17)) * 2.5).astype("float32")
    scores[..., np.arange(17), np.arange(17)] = -65504.0  # LSA's mask: exact zeros, trivial entries
    return ref.softmax(scores.astype("float64")).astype("float32") if name == "sata_twist" else scores


def kernel_bias(seed=2):
    """A trainable-like bias shared by the batch (Swin's relative position
    bias) with a mask written into it (the anti-diagonal)."""
    bias = np.random.default_rng(seed).normal(size=(1, 3, 17, 17)).astype("float32")
    bias[..., np.arange(17), np.arange(16, -1, -1)] += -65504.0
    return bias


def run_kernel(name, layer, x, bias, out_dtype):
    """The kernel through the code that calls it in the package."""
    if name == "sata_twist":
        return layer(x)
    return layer.suppress_scores(x, bias, out_dtype)


def values_and_gradients(layer, name, x, dtype, upstream):
    """The kernel's output on `x` cast to `dtype` (in `dtype`, as the
    attention asks for it without maps), and the gradients to `x` (through
    that cast: rounded to `dtype`), to the bias and to `s`, as float32 NumPy."""
    bias = None if name == "sata_twist" else kernel_bias()

    def loss(s, x, bias=None):
        with keras.StatelessScope(state_mapping=[(layer.sata_scale, s)]):
            out = run_kernel(name, layer, keras.ops.cast(x, dtype), bias, dtype)
            return keras.ops.sum(keras.ops.cast(out, "float32") * upstream)

    out = run_kernel(name, layer, keras.ops.cast(x, dtype), bias, dtype)
    assert keras.backend.standardize_dtype(out.dtype) == (dtype if name != "sata_twist" else "float32")
    grads = gradients(loss, [layer.sata_scale, x] + ([] if bias is None else [bias]))
    grads = grads[1:] + grads[:1]  # `s` last
    return [np.asarray(as_numpy(keras.ops.cast(out, "float32")))] + [np.asarray(g, "float32") for g in grads]


@no_fast_path
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", [name for name in kernels.KERNELS if name in FAST] or kernels.KERNELS)
def test_fast_path_gives_the_references_values_and_gradients(name, dtype):
    layer = TrivialAttentionSuppression(threshold=0.1, initial_scale=0.6)
    layer.build((None, 3, 17, 17))
    x = kernel_input(name)
    upstream = keras.ops.convert_to_tensor(np.random.default_rng(1).normal(size=x.shape).astype("float32"))
    fast = values_and_gradients(layer, name, x, dtype, upstream)
    with kernels.reference_only():
        want = values_and_gradients(layer, name, x, dtype, upstream)
    # Both compute in float32 from the same input: only the order of float32
    # sums differs (then the values and the input's gradient are rounded to
    # their dtype: one unit in the last place where a sum fell on a tie).
    rounded = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 2e-3}[dtype]
    what = ["values", "gradient to the input"] + (["gradient to the bias"] if name != "sata_twist" else [])
    what += ["gradient to s"]
    assert len(fast) == len(want) == len(what)
    for got, expected, label in zip(fast, want, what):
        tolerance = rounded if label in ("values", "gradient to the input") else 1e-5
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=1e-6, err_msg=label)


@no_fast_path
def test_attention_fuses_sata_with_the_softmax_only_with_the_fast_path(monkeypatch):
    calls = []
    fused = TrivialAttentionSuppression.suppress_scores

    def spy(self, scores, *args):
        calls.append("fused")
        return fused(self, scores, *args)

    monkeypatch.setattr(TrivialAttentionSuppression, "suppress_scores", spy)
    layer = MultiHeadSelfAttention(num_heads=2, head_dim=4, suppression=True, diagonal_mask=True)
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    layer.build(x.shape)
    assert fused_form_is_faster() == (BACKEND != "torch" or "sata_softmax" in FAST)
    out = as_numpy(layer(x))
    assert calls == (["fused"] if fused_form_is_faster() else [])
    calls.clear()
    with kernels.reference_only():
        assert fused_form_is_faster() == (BACKEND != "torch")
        reference = as_numpy(layer(x))
        assert calls == ([] if BACKEND == "torch" else ["fused"])
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="the compile fallback is PyTorch's fast path")
def test_a_failing_compile_falls_back_to_the_eager_function_with_one_warning(monkeypatch):
    monkeypatch.setattr(kernels._Compiled, "failed", False)
    compiled = kernels._Compiled(lambda x: x * 2)

    def broken(*args):
        raise RuntimeError("no C++ compiler\ndetails")

    monkeypatch.setattr(compiled, "compiled", broken)
    with pytest.warns(UserWarning, match="torch.compile failed \\(RuntimeError: no C\\+\\+ compiler\\)"):
        assert compiled(3) == 6
    assert kernels._Compiled.failed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compiled(4) == 8  # no second warning, no second try


def test_dispatch_runs_the_reference_unless_a_fast_path_applies(monkeypatch):
    calls = []
    reference = lambda x: ("reference", x)  # noqa: E731

    def builder():
        calls.append("built")
        return lambda x: NotImplemented if x < 0 else ("fast", x)

    monkeypatch.setattr(kernels, "_BUILDERS", {**kernels._BUILDERS, ("sata_twist", BACKEND): builder})
    monkeypatch.setattr(kernels, "_BUILT", {})
    assert kernels.has_fast_path("sata_twist")
    assert kernels.dispatch("sata_twist", reference, 2) == ("fast", 2)
    assert kernels.dispatch("sata_twist", reference, -1) == ("reference", -1)  # declined
    with kernels.reference_only():
        assert not kernels.has_fast_path("sata_twist")
        assert kernels.dispatch("sata_twist", reference, 2) == ("reference", 2)
    assert kernels.fast_paths_enabled() and calls == ["built"]  # restored; built once


def test_unknown_kernel_name_is_an_error_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="Invalid kernel name: 'nosuch'. Allowed values: sata_twist, sata_softmax"):
        kernels.register_fast_path("nosuch", BACKEND)
