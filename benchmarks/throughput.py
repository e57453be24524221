"""Training and inference throughput: ours against the official PyTorch code,
in float32 and mixed_bfloat16, with each technique's cost, side by side.

    python -m benchmarks.throughput --all-backends          # the full table: every backend, both precisions
    KERAS_BACKEND=torch python -m benchmarks.throughput     # one backend
    KERAS_BACKEND=torch python -m benchmarks.throughput --kernels both --precision float32
    KERAS_BACKEND=jax python -m benchmarks.throughput --jit both --models vit,sl_vit

The 64 px config of the papers (Tiny-ImageNet: 200 classes, patch 8, so 8x8
tokens), batch 64. Training is `model.fit` on in-memory arrays (AdamW,
cross-entropy), inference `model.predict`, both after an untimed warm-up
that compiles; the clock runs from Keras' `on_train_begin` to
`on_train_end` (`StepTimer`), as in a long run: each call's building of
its data adapter and teardown of its iterator are left out (on TensorFlow, the teardown of the
iterator over the arrays took ~2 s per `fit` call here, longer than the
4 steps it timed). The official code (`benchmarks/official_torch_reference.py`,
float32 as its authors run it) is timed in the same process. Every entry
(model x precision x jit, and the official models) is timed once per round,
the rounds alternate over all entries, and each figure is the median of
its rounds: the ratios (to plain ViT in the same precision, to the official
code) hold on a busy machine, where absolute figures drift.

First printed: the CPU and its bfloat16 instructions (`avx512_bf16`,
`amx_bf16`; `bf16` on Arm): mixed_bfloat16 pays on CPUs that have them.
With `--flops`, training FLOP/s (3x the forward multiply-adds x 2, per
image) as a fraction of this backend's matmul peak in that precision.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np

import keras_smallvit
from keras_smallvit import kernels

DEFAULT_MODELS = ("vit", "sl_vit", "sl_sata_cb_vit")
ALL_TECHNIQUES = "sl_sata_cb_vit"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Ours -> the official code's model of the same architecture.
OFFICIAL = {"vit": ("ViT", False), "sl_vit": ("SL-ViT", True)}
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


class StepTimer(keras.callbacks.Callback):
    """`seconds`: `clock()` from `on_train_begin` (or `on_predict_begin`:
    the call's data adapter is built, the epoch's iterator not yet) to
    `on_train_end` (the last step done, the iterator not yet torn down).
    Not async-safe, so Keras waits for each step's results (JAX dispatches
    asynchronously)."""

    def __init__(self, clock=time.perf_counter):
        super().__init__()
        self.clock = clock
        self.seconds = None

    def on_train_begin(self, logs=None):
        self.start = self.clock()

    def on_train_end(self, logs=None):
        self.seconds = self.clock() - self.start

    on_predict_begin = on_train_begin
    on_predict_end = on_train_end


def timed_fit(model, x, y, batch_size, clock=time.perf_counter):
    """Seconds of `model.fit` on `(x, y)`, one epoch, as `StepTimer` times it."""
    timer = StepTimer(clock)
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
    return timer.seconds


def timed_predict(model, x, batch_size, clock=time.perf_counter):
    """Seconds of `model.predict` on `x`, as `StepTimer` times it."""
    timer = StepTimer(clock)
    model.predict(x, batch_size=batch_size, verbose=0, callbacks=[timer])
    return timer.seconds


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
    train = count / timed_fit(model, x[:count], y[:count], batch_size)
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)
    inference = count / timed_predict(model, x[:count], batch_size)
    return train, inference, first_step


def cpu_description(cpuinfo=None):
    """`(CPU name, cores, bfloat16 instructions)` from `/proc/cpuinfo` (or
    its text `cpuinfo`); elsewhere the name from `platform` and None for the
    instructions."""
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return platform.processor() or platform.machine(), os.cpu_count(), None
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or fields.get("Model") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    # x86: AVX-512 BF16 (dot products, conversions), AMX (bf16 tile matmuls); Arm: BF16.
    found = [flag for flag in ("avx512_bf16", "amx_bf16", "bf16") if flag in flags]
    return name, os.cpu_count(), found


def describe_cpu(cpuinfo=None):
    """One line: the CPU, its cores and its bfloat16 instructions."""
    name, cores, found = cpu_description(cpuinfo)
    if found is None:
        support = "unknown (no /proc/cpuinfo)"
    elif found:
        support = ", ".join(found) + ("" if "amx_bf16" in found or "bf16" in found else " (no AMX)")
    else:
        support = "none: mixed_bfloat16 emulates bf16 matmuls here, expect it slower than float32"
    return f"CPU: {name}, {cores} cores; bfloat16 instructions: {support}"


class Ours:
    """A model of ours, compiled; `train(steps)` / `infer(steps)` give img/s."""

    def __init__(self, name, precision, jit, fast_paths, args, x, y):
        self.name, self.precision, self.jit, self.fast_paths = name, precision, jit, fast_paths
        self.x, self.y, self.batch_size, self.clock = x, y, args.batch_size, args.clock
        keras.config.set_dtype_policy(precision)
        try:
            self.model = keras_smallvit.create_model(name, num_classes=args.num_classes, image_size=args.image_size)
        finally:
            keras.config.set_dtype_policy("float32")
        self.model.compile(
            optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )

    def warm_up(self):
        """Seconds of the first training step (compiling), then one more of each."""
        start = time.perf_counter()
        self.train(1)
        first = time.perf_counter() - start
        self.infer(1)
        return first

    def train(self, steps):
        count = self.batch_size * steps
        with self.kernels():
            return count / timed_fit(self.model, self.x[:count], self.y[:count], self.batch_size, self.clock)

    def infer(self, steps):
        count = self.batch_size * steps
        with self.kernels():
            return count / timed_predict(self.model, self.x[:count], self.batch_size, self.clock)

    def kernels(self):
        return contextlib.nullcontext() if self.fast_paths else kernels.reference_only()


class Official:
    """The official code's model (float32), timed as `Ours`."""

    def __init__(self, name, args):
        from benchmarks.official_torch_reference import Runner

        self.name, self.precision, self.jit, self.fast_paths = OFFICIAL[name][0], "float32", "-", None
        self.runner = Runner(OFFICIAL[name][1], args.batch_size, args.image_size, args.num_classes, clock=args.clock)

    def warm_up(self):
        start = time.perf_counter()
        self.runner.train(1)
        first = time.perf_counter() - start
        self.runner.infer(1)
        return first

    def train(self, steps):
        return self.runner.train(steps)

    def infer(self, steps):
        return self.runner.infer(steps)


def entries(args, x, y):
    """Everything this backend measures: `[(row fields, Ours or Official)]`."""
    backend = keras.backend.backend()
    jit_modes = {"both": (False, True), "on": (True,), "off": (False,), "auto": ("auto",)}[args.jit]
    kernel_modes = {"on": (True,), "off": (False,), "both": (True, False)}[args.kernels]
    if not kernels.fast_paths():
        kernel_modes = (None,)  # nothing to switch on this backend
    result = []
    if args.official:
        for name in args.models:
            if name in OFFICIAL:
                result.append(Official(name, args))
    for precision in args.precision:
        for jit in jit_modes:
            for fast in kernel_modes:
                if fast is False and jit is True:
                    continue  # a compiled program runs the references anyway
                for name in args.models:
                    result.append(Ours(name, precision, jit, fast, args, x, y))
    for entry in result:
        entry.backend = backend
    return result


def describe(entry):
    fast = "" if entry.fast_paths is None else f", fast paths {'on' if entry.fast_paths else 'off'}"
    return f"{entry.backend} {entry.name} {entry.precision} jit {entry.jit}{fast}"


def progress(message):
    print(message, file=sys.stderr, flush=True)


def run_backend(args):
    backend = keras.backend.backend()
    x, y = synthetic_data(args.image_size, args.num_classes, args.batch_size * args.steps)
    todo = entries(args, x, y)
    firsts = []
    for entry in todo:
        firsts.append(entry.warm_up())
        progress(f"warm: {describe(entry)}, first step {firsts[-1]:.1f} s")
    times = [([], []) for _ in todo]
    for round_ in range(args.rounds):  # alternating: every entry once per round
        for entry, (train, infer) in zip(todo, times):
            train.append(entry.train(args.steps))
            infer.append(entry.infer(args.steps))
            progress(f"round {round_ + 1}/{args.rounds}: {describe(entry)}: train {train[-1]:.1f}, "
                     f"infer {infer[-1]:.1f} img/s")
    peaks = {}
    rows = []
    for entry, (train, infer), first in zip(todo, times, firsts):
        rows.append(
            dict(
                backend=backend if isinstance(entry, Ours) else "official PyTorch",
                model=entry.name,
                precision=entry.precision,
                jit_compile=entry.jit,
                fast_paths=entry.fast_paths,
                train_img_s=float(np.median(train)),
                inference_img_s=float(np.median(infer)),
                first_step_s=first,
            )
        )
        if args.flops and isinstance(entry, Ours):
            from benchmarks.model_table import forward_multiply_adds

            dtype = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[entry.precision]
            peaks.setdefault(dtype, matmul_peak_flops(dtype=dtype))
            macs = forward_multiply_adds(entry.model, args.image_size)
            rows[-1].update(utilisation=rows[-1]["train_img_s"] * 3 * 2 * macs / peaks[dtype],
                            matmul_peak_gflops=peaks[dtype] / 1e9)
    add_ratios(rows, args.models[0])
    return rows


def add_ratios(rows, baseline):
    """`train_vs_vit` / `inference_vs_vit` (to `baseline` in the same backend,
    precision, jit and kernels) and `train_vs_official` / `inference_vs_official`."""
    official = {r["model"]: r for r in rows if r["backend"] == "official PyTorch"}
    base = {
        (r["backend"], r["precision"], str(r["jit_compile"]), r["fast_paths"]): r
        for r in rows if r["model"] == baseline and r["backend"] != "official PyTorch"
    }
    for row in rows:
        if row["backend"] == "official PyTorch":
            continue
        ref = base.get((row["backend"], row["precision"], str(row["jit_compile"]), row["fast_paths"]))
        if ref:
            row["train_vs_vit"] = row["train_img_s"] / ref["train_img_s"]
            row["inference_vs_vit"] = row["inference_img_s"] / ref["inference_img_s"]
        match = official.get(OFFICIAL.get(row["model"], ("",))[0])
        if match:
            row["train_vs_official"] = row["train_img_s"] / match["train_img_s"]
            row["inference_vs_official"] = row["inference_img_s"] / match["inference_img_s"]


def ratio(row, key):
    return f"{row[key]:.2f}" if key in row else "-"


def print_table(rows):
    print(
        "| backend | precision | jit | fast paths | model | train img/s | infer img/s | train vs ViT | "
        "infer vs ViT | train vs official | infer vs official | first step s |"
    )
    print("|---" * 12 + "|")
    for row in rows:
        fast = {None: "-", True: "on", False: "off"}[row["fast_paths"]]
        print(
            f"| {row['backend']} | {row['precision']} | {row['jit_compile']} | {fast} | `{row['model']}` | "
            f"{row['train_img_s']:.1f} | {row['inference_img_s']:.1f} | {ratio(row, 'train_vs_vit')} | "
            f"{ratio(row, 'inference_vs_vit')} | {ratio(row, 'train_vs_official')} | "
            f"{ratio(row, 'inference_vs_official')} | {row['first_step_s']:.1f} |",
            flush=True,
        )
    for row in rows:
        if "utilisation" in row:
            print(f"{row['backend']} {row['precision']} `{row['model']}`: training at "
                  f"{row['utilisation']:.0%} of the {row['matmul_peak_gflops']:.0f} GFLOP/s matmul peak")


def print_summary(rows):
    """The issue's goals, one line each: SL-ViT against the official code, all four against ViT."""
    print("\nSummary (medians of alternating rounds; ratios within one process):")
    for row in rows:
        if row["model"] == "sl_vit" and "train_vs_official" in row:
            print(f"- SL-ViT training vs the official code (float32): {row['train_vs_official']:.2f}x "
                  f"({row['backend']}, {row['precision']}, jit {row['jit_compile']}"
                  f"{'' if row['fast_paths'] is None else ', fast paths ' + ('on' if row['fast_paths'] else 'off')})")
    for row in rows:
        if row["model"] == ALL_TECHNIQUES and "train_vs_vit" in row:
            print(f"- all four techniques vs ViT: training {row['train_vs_vit']:.2f}, inference "
                  f"{row['inference_vs_vit']:.2f} ({row['backend']}, {row['precision']}, jit {row['jit_compile']}"
                  f"{'' if row['fast_paths'] is None else ', fast paths ' + ('on' if row['fast_paths'] else 'off')})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated; the first is the baseline")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (batches) per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each figure is their median")
    parser.add_argument("--jit", choices=("both", "on", "off", "auto"), default="auto")
    parser.add_argument("--precision", default="float32,mixed_bfloat16",
                        help=f"comma-separated, from {', '.join(PRECISIONS)}")
    parser.add_argument("--kernels", choices=("on", "off", "both"), default="on",
                        help="the fast paths of keras_smallvit.kernels (where the backend has any): "
                             "on, off (the keras.ops references) or both, side by side")
    parser.add_argument("--no-official", dest="official", action="store_false",
                        help="skip the official PyTorch code (needs torch)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed seconds (an idle machine); cpu: the process's CPU seconds, all threads "
                             "(a busy machine; with OMP_NUM_THREADS=1 that is the work done, what the ratios compare)")
    parser.add_argument("--flops", action="store_true", help="add training utilisation of the matmul peak")
    parser.add_argument("--all-backends", action="store_true", help="run each backend in its own process")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--quiet-cpu", action="store_true", help=argparse.SUPPRESS)  # the children of --all-backends
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.clock = {"wall": time.perf_counter, "cpu": time.process_time}[args.clock]
    args.precision = [p for p in args.precision.split(",") if p]
    for precision in args.precision:
        if precision not in PRECISIONS:
            parser.error(f"argument --precision: invalid choice {precision!r} (allowed: {', '.join(PRECISIONS)})")
    for name in args.models:
        keras_smallvit.models.registry.get_model_entry(name)  # clear error before any work

    if args.all_backends:
        print(describe_cpu(), flush=True)
        rows = []
        forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--all-backends"]
        for backend in BACKENDS:
            out = f"/tmp/throughput_{backend}_{os.getpid()}.json"
            env = dict(os.environ, KERAS_BACKEND=backend)
            cmd = [sys.executable, "-m", "benchmarks.throughput", *forwarded, "--json", out, "--quiet-cpu"]
            subprocess.run(cmd, env=env, check=True)
            with open(out) as f:
                rows += json.load(f)
            os.remove(out)
        print(f"\nAll backends ({describe_cpu()}; batch {args.batch_size}, {args.image_size} px, "
              f"{args.num_classes} classes):")
        print_table(rows)
        print_summary(rows)
    else:
        if not args.quiet_cpu:
            print(describe_cpu(), flush=True)
        rows = run_backend(args)
        print_table(rows)
        print_summary(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
