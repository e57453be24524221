"""Training and inference throughput of ViT and its techniques, one backend per run.

    KERAS_BACKEND=torch python -m benchmarks.throughput                 # the issue's table
    KERAS_BACKEND=jax python -m benchmarks.throughput --jit both --models vit,sl_vit
    python -m benchmarks.throughput --all-backends                      # each backend in its own process

The 64 px config of the papers (Tiny-ImageNet: 200 classes, patch 8, so 8x8
tokens), batch 128, float32 by default. Training is `model.fit` on in-memory
arrays (AdamW, cross-entropy), inference `model.predict`; both after an
untimed warm-up that compiles. Each technique's cost is the ratio of its
img/s to plain ViT's, measured in the same run (same process, same machine
state), so the ratios hold even when absolute figures drift.

Utilisation: training FLOP/s (3x the forward multiply-adds x 2, per image)
as a fraction of this machine's float32 matmul peak, measured in the same
run with one large matmul on the same backend.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np

import keras_smallvit

DEFAULT_MODELS = ("vit", "sl_vit", "sata_vit", "cb_vit", "sl_sata_cb_vit")
BACKENDS = ("tensorflow", "jax", "torch")


def matmul_peak_flops(size=2048, repeats=8, dtype="float32"):
    """FLOP/s of a square `dtype` matmul on the current backend (best of `repeats`).

    Each timing ends on one element of the product copied to the host, which
    waits for an asynchronous device (GPU) without timing a large transfer.
    """
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.normal(size=(size, size)).astype("float32"), dtype=dtype)
    b = keras.ops.convert_to_tensor(rng.normal(size=(size, size)).astype("float32"), dtype=dtype)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[:1, :1])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[:1, :1])
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def synthetic_data(image_size, num_classes, count, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(count, image_size, image_size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, num_classes, count), num_classes)
    return x, y


def measure(model, x, y, batch_size, steps, jit_compile):
    """`(train img/s, inference img/s, first-step seconds)` of `model`."""
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    count = batch_size * steps
    start = time.perf_counter()
    model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)
    first_step = time.perf_counter() - start
    model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)  # a 2nd warm-up
    start = time.perf_counter()
    model.fit(x[:count], y[:count], batch_size=batch_size, epochs=1, verbose=0)
    train = count / (time.perf_counter() - start)
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)
    start = time.perf_counter()
    model.predict(x[:count], batch_size=batch_size, verbose=0)
    inference = count / (time.perf_counter() - start)
    return train, inference, first_step


def run_backend(args):
    from benchmarks.model_table import forward_multiply_adds

    keras.config.set_dtype_policy(args.precision)
    backend = keras.backend.backend()
    peak = matmul_peak_flops()
    x, y = synthetic_data(args.image_size, args.num_classes, args.batch_size * args.steps)
    jit_modes = {"both": (False, True), "on": (True,), "off": (False,), "auto": ("auto",)}[args.jit]
    rows = []
    for jit in jit_modes:
        baseline = None
        for name in args.models:
            model = keras_smallvit.create_model(name, num_classes=args.num_classes, image_size=args.image_size)
            macs = forward_multiply_adds(model, args.image_size) if args.flops else None
            train, inference, first = measure(model, x, y, args.batch_size, args.steps, jit)
            baseline = baseline or (train, inference)
            utilisation = None if macs is None else train * 3 * 2 * macs / peak
            rows.append(
                dict(
                    backend=backend,
                    model=name,
                    jit_compile=jit,
                    train_img_s=train,
                    inference_img_s=inference,
                    train_vs_vit=train / baseline[0],
                    inference_vs_vit=inference / baseline[1],
                    first_step_s=first,
                    forward_mmacs=None if macs is None else macs / 1e6,
                    utilisation=utilisation,
                    matmul_peak_gflops=peak / 1e9,
                )
            )
            print_row(rows[-1], header=len(rows) == 1)
            keras.backend.clear_session()
    return rows


def print_row(row, header=False):
    if header:
        print(
            "| backend | model | jit | train img/s | vs vit | infer img/s | vs vit | first step s | util. of peak |"
        )
        print("|---" * 9 + "|")
    util = "-" if row["utilisation"] is None else f"{row['utilisation']:.0%} of {row['matmul_peak_gflops']:.0f} GF/s"
    print(
        f"| {row['backend']} | `{row['model']}` | {row['jit_compile']} | {row['train_img_s']:.1f} | "
        f"{row['train_vs_vit']:.2f} | {row['inference_img_s']:.1f} | {row['inference_vs_vit']:.2f} | "
        f"{row['first_step_s']:.1f} | {util} |",
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated; the first is the baseline")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (batches) per measurement")
    parser.add_argument("--jit", choices=("both", "on", "off", "auto"), default="both")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--no-flops", dest="flops", action="store_false", help="skip the utilisation column")
    parser.add_argument("--all-backends", action="store_true", help="run each backend in its own process")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    for name in args.models:
        keras_smallvit.models.registry.get_model_entry(name)  # clear error before any work

    if args.all_backends:
        rows = []
        forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--all-backends"]
        for backend in BACKENDS:
            out = f"/tmp/throughput_{backend}_{os.getpid()}.json"
            env = dict(os.environ, KERAS_BACKEND=backend)
            cmd = [sys.executable, "-m", "benchmarks.throughput", *forwarded, "--json", out]
            subprocess.run(cmd, env=env, check=True)
            with open(out) as f:
                rows += json.load(f)
    else:
        rows = run_backend(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
