"""Backend-specific fast paths of a few functions, chosen at run time.

The one module of the package that imports a framework for speed (the rest
is `keras.ops` only). Each kernel has a `keras.ops` reference, the
definition, which every backend can run; a backend may register a fast path
for it, which must give the same values and gradients (tested against the
reference in float32 and half precision: `tests/test_kernels.py`) and wins
in a side-by-side measurement (`benchmarks.throughput --kernels both`,
`benchmarks.layer_costs --kernels both`).
`dispatch(name, reference, *args)` calls the fast path of the current
backend when there is one and it applies, else the reference.

Kernels (`KERNELS`):

- `"sata_twist"`: SATA's TWIST on the probabilities
  (`TrivialAttentionSuppression.call`).
- `"sata_softmax"`: the softmax of the scores (cast to float32, plus a
  bias or mask), then TWIST, cast to the values' dtype
  (`TrivialAttentionSuppression.suppress_scores`).

Fast paths (`fast_paths()`): on PyTorch, each kernel as a
`torch.autograd.Function` whose forward and hand-written backward are each
compiled by `torch.compile` (Inductor fuses each into one or two loops over
the `(B, heads, N, N)` maps, the casts and the mask included, where eager
mode runs each op as its own memory pass). The plain softmax gained nothing
from the same treatment (a 64 px ViT in mixed_bfloat16 trained at 163 vs
164 img/s): PyTorch's own softmax kernel is as fast as Inductor's loops. The first call compiles (seconds; cached on disk by PyTorch), a
second input shape once more, into code for any shape. Where compiling fails (no C++ compiler, say), the same functions
run eagerly, with one warning. Inside a traced or compiled program (Keras'
`jit_compile=True`, `torch.export`) and on meta tensors (Keras' shape
inference) the reference runs: the surrounding compiler sees plain ops.

`set_fast_paths(False)`, or `KERAS_SMALLVIT_FAST_PATHS=0` in the
environment, makes every kernel run its reference.
"""

import contextlib
import os
import warnings

import keras

KERNELS = ("sata_twist", "sata_softmax")
ENV_VARIABLE = "KERAS_SMALLVIT_FAST_PATHS"

# (kernel, backend) -> a function returning the kernel's fast implementation
# (built on first use, so importing this module imports no framework).
_BUILDERS = {}
_BUILT = {}
_enabled = os.environ.get(ENV_VARIABLE, "1") not in ("0", "false", "False")


def register_fast_path(name, backend):
    """Decorator: `builder()` returns the fast path of kernel `name` on `backend`.

    The fast path takes the reference's arguments and returns its result, or
    `NotImplemented` where it does not apply (then the reference runs).
    """
    if name not in KERNELS:
        raise ValueError(f"Invalid kernel name: {name!r}. Allowed values: {', '.join(KERNELS)}.")

    def decorate(builder):
        _BUILDERS[(name, backend)] = builder
        return builder

    return decorate


def set_fast_paths(enabled):
    """Turns every fast path on (the default) or off (the references run)."""
    global _enabled
    _enabled = bool(enabled)


def fast_paths_enabled():
    return _enabled


@contextlib.contextmanager
def reference_only():
    """Within the block, every kernel runs its `keras.ops` reference."""
    previous = _enabled
    set_fast_paths(False)
    try:
        yield
    finally:
        set_fast_paths(previous)


def fast_paths(backend=None):
    """The kernels with a fast path on `backend` (default: the current one)."""
    backend = backend or keras.backend.backend()
    return tuple(name for name in KERNELS if (name, backend) in _BUILDERS)


def has_fast_path(name):
    """Whether kernel `name` runs a fast path on the current backend (one is
    registered and fast paths are on); it may still decline some arguments."""
    return _enabled and (name, keras.backend.backend()) in _BUILDERS

def dispatch(name, reference, *args):
    """`reference(*args)`, or the current backend's fast path of kernel `name`
    where one is registered, enabled and applies to these arguments."""
    if _enabled:
        key = (name, keras.backend.backend())
        if key in _BUILDERS:
            if key not in _BUILT:
                _BUILT[key] = _BUILDERS[key]()
            result = _BUILT[key](*args)
            if result is not NotImplemented:
                return result
    return reference(*args)


# --- PyTorch ---------------------------------------------------------------
# Written with `torch` directly, by nature. The formulas are those of the
# references in `keras_smallvit/layers/suppression.py` (see their comments);
# each function below is compiled whole, so the row reductions and the
# elementwise ops around them fuse.


def _twist_forward(attention, scale, threshold, epsilon):
    import torch

    row_max = attention.amax(-1, keepdim=True)
    trivial = attention <= threshold * row_max
    mass = torch.where(trivial, attention, 0.0).sum(-1, keepdim=True) + epsilon
    out = torch.where(trivial, attention * attention * (scale / mass), attention)
    return out, row_max, mass


def _twist_backward(upstream, attention, row_max, mass, scale, threshold, epsilon):
    import torch

    trivial = attention <= threshold * row_max
    ratio = scale / mass
    upstream_attention = upstream * attention
    weighted = torch.where(trivial, upstream_attention * attention, 0.0).sum(-1, keepdim=True)
    grad = torch.where(trivial, upstream_attention * (2.0 * ratio) - ratio * weighted / mass, upstream)
    return grad, (weighted / mass).sum()


def _biased_float32(scores, bias):
    scores = scores.float()
    return scores if bias is None else scores + bias


def _softmax_forward(scores, bias, scale, threshold, epsilon, dtype):
    import torch

    scores = _biased_float32(scores, bias)
    row_max = scores.amax(-1, keepdim=True)
    shifted = torch.exp(scores - row_max)
    normaliser = shifted.sum(-1, keepdim=True)
    trivial = shifted <= threshold
    mass = torch.where(trivial, shifted, 0.0).sum(-1, keepdim=True) / normaliser + epsilon
    probs = shifted / normaliser
    out = torch.where(trivial, probs * probs * (scale / mass), probs)
    return out.to(dtype), row_max, normaliser, mass


def _softmax_backward(upstream, scores, bias, row_max, normaliser, mass, scale, threshold, epsilon, bias_grad):
    import torch

    # The probabilities are recomputed from the scores kept in their own
    # dtype (half the memory of float32 maps in mixed precision).
    upstream = upstream.float()
    shifted = torch.exp(_biased_float32(scores, bias) - row_max)
    probs = shifted / normaliser
    trivial = shifted <= threshold
    ratio = scale / mass
    upstream_probs = upstream * probs
    weighted = torch.where(trivial, upstream_probs * probs, 0.0).sum(-1, keepdim=True)
    plain = torch.where(trivial, 0.0, upstream_probs).sum(-1, keepdim=True)
    grad_probs = torch.where(trivial, upstream_probs * (2.0 * ratio) - ratio * weighted / mass, upstream)
    row_dot = plain + ratio * weighted * (1.0 + epsilon / mass)
    grad = probs * (grad_probs - row_dot)
    grad_bias = grad.sum_to_size(bias.shape) if bias_grad else None
    return grad.to(scores.dtype), (weighted / mass).sum(), grad_bias


class _Compiled:
    """`torch.compile(fn)`, or `fn` itself from the first failure on (one warning)."""

    failed = False  # shared: a machine without a compiler fails every kernel

    def __init__(self, fn):
        import torch

        self.fn = fn
        self.compiled = torch.compile(fn, dynamic=None)

    def __call__(self, *args):
        if not _Compiled.failed:
            try:
                return self.compiled(*args)
            except Exception as error:  # the compiler's many failure types
                _Compiled.failed = True
                warnings.warn(
                    f"keras_smallvit.kernels: torch.compile failed ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); the fast paths run eagerly.",
                    stacklevel=2,
                )
        return self.fn(*args)


def _declines(x, *, bias=None, dtypes=("float32",)):
    """Whether a torch fast path leaves `x` (and `bias`) to the reference:
    inside a compiler (which fuses the reference itself), on meta tensors,
    for other dtypes, or a bias that is not float32 of the scores' rank."""
    import torch

    if torch.compiler.is_compiling() or x.device.type == "meta" or x.ndim < 2 or x.numel() == 0:
        return True
    if str(x.dtype).removeprefix("torch.") not in dtypes:
        return True
    return bias is not None and (
        not isinstance(bias, torch.Tensor) or bias.dtype != torch.float32 or bias.ndim != x.ndim
    )


def _torch_dtype(dtype):
    import torch

    return getattr(torch, keras.backend.standardize_dtype(dtype))


@register_fast_path("sata_twist", "torch")
def _torch_twist():
    import torch

    forward, backward = _Compiled(_twist_forward), _Compiled(_twist_backward)

    class Twist(torch.autograd.Function):
        @staticmethod
        def forward(ctx, attention, scale, threshold, epsilon):
            out, *rows = forward(attention.contiguous(), scale, threshold, epsilon)
            ctx.save_for_backward(attention, scale, *rows)
            ctx.constants = (threshold, epsilon)
            return out

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, upstream):
            attention, scale, *rows = ctx.saved_tensors
            grad, grad_scale = backward(upstream.contiguous(), attention, *rows, scale, *ctx.constants)
            return grad, grad_scale.to(scale.dtype), None, None

    def fast_path(attention, scale, threshold, epsilon):
        if _declines(attention):
            return NotImplemented
        return Twist.apply(attention, scale, float(threshold), float(epsilon))

    return fast_path


HALF_AND_FLOAT32 = ("float32", "bfloat16", "float16")


@register_fast_path("sata_softmax", "torch")
def _torch_sata_softmax():
    import torch

    forward, backward = _Compiled(_softmax_forward), _Compiled(_softmax_backward)

    class SataSoftmax(torch.autograd.Function):
        @staticmethod
        def forward(ctx, scores, scale, bias, threshold, epsilon, dtype):
            scores = scores.contiguous()
            out, *rows = forward(scores, bias, scale, threshold, epsilon, dtype)
            ctx.save_for_backward(scores, bias, scale, *rows)
            ctx.constants = (threshold, epsilon)
            return out

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, upstream):
            scores, bias, scale, *rows = ctx.saved_tensors
            bias_grad = bias is not None and ctx.needs_input_grad[2]
            grad, grad_scale, grad_bias = backward(
                upstream.contiguous(), scores, bias, *rows, scale, *ctx.constants, bias_grad
            )
            return grad, grad_scale.to(scale.dtype), grad_bias, None, None, None

    def fast_path(scores, scale, threshold, epsilon, bias=None, dtype="float32"):
        if _declines(scores, bias=bias, dtypes=HALF_AND_FLOAT32):
            return NotImplemented
        return SataSoftmax.apply(scores, scale, bias, float(threshold), float(epsilon), _torch_dtype(dtype))

    return fast_path
