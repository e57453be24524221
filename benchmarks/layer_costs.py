"""Each technique's layer alone: training-step and forward milliseconds,
compiled as the runner compiles (XLA on TensorFlow/JAX, eager torch), as
ratios against the plain layer measured in the same run.

    KERAS_BACKEND=jax python -m benchmarks.layer_costs
    KERAS_BACKEND=torch python -m benchmarks.layer_costs --layers patch,spt --batch-size 64
    KERAS_BACKEND=torch python -m benchmarks.layer_costs --layers mhsa,sata,lsa_sata --kernels both

The 64 px config of the papers (patch 8, dim 192, 12 heads of 16, 65
tokens). Tokenizers are compared with `patch` (plain patch embedding),
attention variants with `mhsa` (plain multi-head self-attention). A step is
`train_on_batch` with an MSE loss against zeros (SGD); best of 3 rounds.
`--kernels both` times each layer with the fast paths of
`keras_smallvit.kernels` on and off (the `keras.ops` references), side by
side, where the backend has any.
"""

import argparse
import contextlib
import time

import keras
import numpy as np

from keras_smallvit import kernels
from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.patching import PatchEmbedding
from keras_smallvit.layers.patching import ShiftedPatchTokenization
from keras_smallvit.training.runner import resolve_jit_compile

IMAGE_SIZE, PATCH, DIM, HEADS, HEAD_DIM = 64, 8, 192, 12, 16
TOKENS = (IMAGE_SIZE // PATCH) ** 2 + 1
TOKENIZERS = {"patch": lambda: PatchEmbedding(PATCH, DIM), "spt": lambda: ShiftedPatchTokenization(PATCH, DIM)}
ATTENTION_OPTIONS = {
    "mhsa": {},
    "lsa_mask": dict(diagonal_mask=True),
    "lsa_temperature": dict(learnable_temperature=True),
    "lsa": dict(diagonal_mask=True, learnable_temperature=True),
    "sata": dict(suppression=True),
    "lsa_sata": dict(diagonal_mask=True, learnable_temperature=True, suppression=True),
}
LAYERS = tuple(TOKENIZERS) + tuple(ATTENTION_OPTIONS)


def layer_model(name, batch_size, rng):
    """`(compiled one-layer model, inputs, zero targets, baseline name)`."""
    if name in TOKENIZERS:
        shape, layer, baseline = (IMAGE_SIZE, IMAGE_SIZE, 3), TOKENIZERS[name](), "patch"
    else:
        shape, baseline = (TOKENS, DIM), "mhsa"
        layer = MultiHeadSelfAttention(HEADS, HEAD_DIM, **ATTENTION_OPTIONS[name])
    inputs = keras.Input(shape)
    model = keras.Model(inputs, layer(inputs))
    model.compile("sgd", "mse", jit_compile=resolve_jit_compile("auto"))
    x = rng.uniform(size=(batch_size, *shape)).astype("float32")
    y = np.zeros((batch_size, *model.output_shape[1:]), "float32")
    return model, x, y, baseline


def best_milliseconds(fn, repeats, rounds=3):
    fn()
    fn()  # compile, then one warm call
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default=",".join(LAYERS), help=f"comma-separated, from {', '.join(LAYERS)}")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="steps per timed round")
    parser.add_argument("--kernels", choices=("on", "off", "both"), default="on",
                        help="the fast paths of keras_smallvit.kernels: on, off (the keras.ops references) or both")
    args = parser.parse_args(argv)
    names = [n for n in args.layers.split(",") if n]
    for name in names:
        if name not in LAYERS:
            parser.error(f"argument --layers: invalid choice {name!r} (allowed: {', '.join(LAYERS)})")
    modes = {"on": (True,), "off": (False,), "both": (True, False)}[args.kernels] if kernels.fast_paths() else (None,)
    rng = np.random.default_rng(0)
    times, rows = {}, []
    print("| backend | layer | fast paths | train step ms | vs baseline | forward ms | vs baseline |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in names:
        model, x, y, baseline = layer_model(name, args.batch_size, rng)
        for fast in modes:
            with contextlib.nullcontext() if fast in (True, None) else kernels.reference_only():
                train = best_milliseconds(lambda: model.train_on_batch(x, y), args.repeats)
                forward = best_milliseconds(lambda: keras.ops.convert_to_numpy(model.predict_on_batch(x)), args.repeats)
            times[name, fast] = (train, forward)
            base = times.get((baseline, fast))
            ratio = (lambda i: f"{times[name, fast][i] / base[i]:.2f}") if base else (lambda i: "-")
            row = dict(backend=keras.backend.backend(), layer=name, fast_paths=fast, train_ms=train, forward_ms=forward,
                       baseline=baseline)
            rows.append(row)
            label = {None: "-", True: "on", False: "off"}[fast]
            print(f"| {row['backend']} | `{name}` | {label} | {train:.1f} | {ratio(0)} | {forward:.1f} | {ratio(1)} |",
                  flush=True)
        keras.backend.clear_session()
    return rows


if __name__ == "__main__":
    main()
