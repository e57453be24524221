"""One set of weights on TensorFlow, JAX and PyTorch, each in its own process.

    python -m training.compare_backends --model sl_vit --image-size 64 --num-classes 200
    python -m training.compare_backends --weights runs/digits_sl_vit/best.keras --json table.json
    python -m training.compare_backends --model vit --set depth=4 --backends jax,torch --jit off

The weights are a `.keras` file (backend-neutral) or a registered model
initialised once with `--seed` and saved to a temporary `.keras` file; every
backend loads that same file and sees the same uint8-derived images. Per
backend it reports the max absolute logit difference against the reference
backend (the first of `--backends`, TensorFlow by default), inference and
training img/s, and the first training step's seconds (build + compile).
Training runs last, on a fresh optimizer, so the logits compared are the
loaded weights'. The table is printed as Markdown and written as JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
JIT_CHOICES = ("auto", "on", "off")


def parse_overrides(pairs):
    """`["depth=4", "suppression={'threshold': 0.05}"]` -> dict, values read as
    `training.train`'s `--set` reads them."""
    from keras_smallvit.training.config import parse_value

    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"Invalid `--set` {pair!r}: expected key=value.")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = parse_value(value)
    return overrides


def worker(args):
    """Runs in a child process under one backend; writes its results as JSON."""
    import keras
    import numpy as np

    import keras_smallvit  # noqa: F401  (registers the package's layers for loading)

    model = keras.saving.load_model(args.weights, compile=False)
    images = np.load(args.images)
    x = images.astype("float32") / 255.0
    logits = np.asarray(model.predict(x, batch_size=args.batch_size, verbose=0), dtype="float64")
    np.save(args.logits_out, logits)

    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    # Inference speed: predict after one warm-up call.
    model.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)
    start = time.perf_counter()
    model.predict(x, batch_size=args.batch_size, verbose=0)
    inference = len(x) / (time.perf_counter() - start)

    num_classes = logits.shape[-1]
    labels = keras.utils.to_categorical(np.arange(len(x)) % num_classes, num_classes)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    batch = args.batch_size
    start = time.perf_counter()
    model.fit(x[:batch], labels[:batch], batch_size=batch, epochs=1, verbose=0)
    first_step = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(x, labels, batch_size=batch, epochs=1, verbose=0)
    train = len(x) / (time.perf_counter() - start)
    result = dict(
        backend=keras.backend.backend(),
        jit_compile=model.jit_compile,  # "auto" resolved by Keras
        inference_img_s=inference,
        train_img_s=train,
        first_step_s=first_step,
    )
    with open(args.result_out, "w") as f:
        json.dump(result, f)


def prepare_weights(args, workdir):
    """Path of the `.keras` file every backend loads (saved here when `--model`)."""
    if args.weights:
        if not os.path.exists(args.weights):
            raise FileNotFoundError(f"Invalid `--weights` {args.weights!r}: no such file.")
        return args.weights
    import keras

    import keras_smallvit

    keras.utils.set_random_seed(args.seed)
    model = keras_smallvit.create_model(
        args.model, num_classes=args.num_classes, image_size=args.image_size, **parse_overrides(args.set)
    )
    path = os.path.join(workdir, f"{args.model}_seed{args.seed}.keras")
    model.save(path)
    return path


def compare(args):
    """Runs every backend, returns the rows (dicts) of the table."""
    import numpy as np

    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        if backend not in BACKENDS:
            raise ValueError(f"Invalid `--backends` entry {backend!r}. Allowed values: {', '.join(BACKENDS)}.")
    with tempfile.TemporaryDirectory(prefix="compare_backends_") as workdir:
        weights = prepare_weights(args, workdir)
        image_size = read_image_size(weights)
        count = args.batch_size * args.steps
        images = np.random.default_rng(args.seed).integers(0, 256, (count, *image_size, 3), dtype="uint8")
        images_path = os.path.join(workdir, "images.npy")
        np.save(images_path, images)
        if args.save_logits:
            os.makedirs(args.save_logits, exist_ok=True)
            np.save(os.path.join(args.save_logits, "images.npy"), images)
        rows, logits = [], {}
        for backend in backends:
            logits_path = os.path.join(workdir, f"logits_{backend}.npy")
            result_path = os.path.join(workdir, f"result_{backend}.json")
            command = [
                sys.executable, "-m", "training.compare_backends", "--worker",
                "--weights", weights, "--images", images_path, "--logits-out", logits_path,
                "--result-out", result_path, "--batch-size", str(args.batch_size), "--jit", args.jit,
            ]  # fmt: skip
            env = dict(os.environ, KERAS_BACKEND=backend)
            print(f"=== {backend} ===", flush=True)
            subprocess.run(command, env=env, check=True)
            with open(result_path) as f:
                row = json.load(f)
            logits[backend] = np.load(logits_path)
            if args.save_logits:
                os.makedirs(args.save_logits, exist_ok=True)
                np.save(os.path.join(args.save_logits, f"{backend}.npy"), logits[backend])
            reference = logits[backends[0]]
            row["max_abs_logit_diff"] = float(np.max(np.abs(logits[backend] - reference)))
            row["reference_backend"] = backends[0]
            row["weights"] = args.weights or f"{args.model} (seed {args.seed})"
            rows.append(row)
    return rows


def read_image_size(weights):
    """`(height, width)` of the model's input (the file loaded on this process's backend)."""
    import keras

    import keras_smallvit  # noqa: F401  (registers the package's layers for loading)

    return tuple(keras.saving.load_model(weights, compile=False).input_shape[1:3])


def format_table(rows):
    lines = [
        f"| backend | max abs logit diff vs {rows[0]['reference_backend']} | inference img/s | "
        "train img/s | first train step s | jit_compile |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['backend']} | {row['max_abs_logit_diff']:.2e} | {row['inference_img_s']:.1f} | "
            f"{row['train_img_s']:.1f} | {row['first_step_s']:.1f} | {row['jit_compile']} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", help="a .keras file (any backend saved it)")
    source.add_argument("--model", default="sl_vit", help="a registered model, freshly initialised with --seed")
    parser.add_argument("--set", action="append", default=[], help="create_model override key=value (with --model)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated; the first is the reference")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="batches per timing")
    parser.add_argument("--jit", choices=JIT_CHOICES, default="auto", help="jit_compile of the training step")
    parser.add_argument("--json", default="compare_backends.json", help="where the table is written as JSON")
    parser.add_argument("--save-logits", default=None, help="folder for images.npy and <backend>.npy logits")
    # Internal: one backend's side, run in a child process.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--logits-out", help=argparse.SUPPRESS)
    parser.add_argument("--result-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return None
    rows = compare(args)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"written: {args.json}")
    return rows


if __name__ == "__main__":
    main()
