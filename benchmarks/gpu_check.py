"""One command on a GPU machine: how fast each backend trains, how much of the
GPU it uses, whether the host can feed it, and whether float16 stays finite.

    python -m benchmarks.gpu_check                       # on a GPU machine: under 8 minutes
    python -m benchmarks.gpu_check --backends jax,torch --out gpu_check_h200
    python -m benchmarks.gpu_check --cpu-smoke           # seconds, on CPU (what the test runs)

Each backend runs in its own child process (`KERAS_BACKEND` set), under a
wall-clock `--timeout`; a child that fails or runs out of time costs its own
rows only, and every row it finished is kept (it rewrites its JSON after each
one). Per backend:
- the bf16 matmul peak of the GPU, measured in the child with one large
  square matmul (best of several, synchronised on one element);
- for `vit`, `sl_vit` and `sl_sata_cb_vit` (all four techniques), training and
  inference img/s under `mixed_bfloat16` with XLA (`jit_compile=True`); on
  torch both eager and `jit_compile=True` (`torch.compile`), so the table
  shows where compiling helps; each row's training FLOP/s (3x the forward
  multiply-adds x 2, per image) as a fraction of that peak; an error is
  recorded in its row and the next row runs;
- a short `mixed_float16` fit of `sl_sata_cb_vit` (loss scaling as Keras does
  it) whose losses must all be finite;
- for `vit` and `sl_vit` (`--attention-models`: models whose attention has
  no SATA, so it may fuse), training and inference img/s with the fused
  attention (`keras.ops.dot_product_attention`) and with the explicit form
  (`use_fused_attention(False)`), side by side in the same child, under
  `mixed_bfloat16` with XLA on TensorFlow/JAX and eagerly on torch (the
  default of each), and the ratio fused / explicit.
One more child times the host's input pipeline: the full recipe (crop, flip,
AutoAugment, erasing, CutMix/Mixup, repeated augmentation) on the digits data
upsampled to the image size, in "host" and "device" batch-augmentation modes,
with img/s per core and the host cores a GPU at the measured training speed
would need.

The results go to `--out` (a folder): `gpu_check.json` (every figure) and
`gpu_check.md` (the tables), each written atomically. An existing folder is
used only if it is empty or holds a previous gpu_check's marker file.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
MODELS = ("vit", "sl_vit", "sl_sata_cb_vit")
ATTENTION_MODELS = ("vit", "sl_vit")
ATTENTION_FORMS = ("fused", "explicit")
FLOAT16_MODEL = "sl_sata_cb_vit"
OUT_MARKER = ".keras_smallvit_gpu_check"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the children run `-m benchmarks...`
# --cpu-smoke: a model small enough that every step of the check runs in seconds on CPU.
SMOKE_OVERRIDES = dict(depth=1, hidden_dim=32, num_heads=2, head_dim=8)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, from: " + ", ".join(BACKENDS))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated registered model names")
    parser.add_argument(
        "--attention-models", default=",".join(ATTENTION_MODELS),
        help="models timed with the fused and the explicit attention (comma-separated; empty: none)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 (8 with --cpu-smoke)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row; default 20 (2 with --cpu-smoke)")
    parser.add_argument("--image-size", type=int, default=None, help="default 64 (16 with --cpu-smoke)")
    parser.add_argument("--num-classes", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per child process")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny models and few steps: a seconds-long run on CPU")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false", help="skip the input-pipeline child")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: the child's job
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)  # internal: the child's JSON
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    for flag, smoke_default, default in (("batch_size", 8, 256), ("steps", 2, 20), ("image_size", 16, 64)):
        if getattr(args, flag) is None:
            setattr(args, flag, smoke_default if smoke else default)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.attention_models = [m.strip() for m in args.attention_models.split(",") if m.strip()]
    return args


def validate(args):
    """Clear errors, naming the argument, before anything runs or is written."""
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown or not args.backends:
        raise ValueError(f"--backends: unknown {unknown or 'empty list'}. Allowed values: {', '.join(BACKENDS)}.")
    if not args.models:
        raise ValueError("--models: empty list. Give registered model names, e.g. " + ",".join(MODELS) + ".")
    from keras_smallvit.models.registry import get_model_entry

    for name in args.models + args.attention_models:
        get_model_entry(name)  # raises, naming the registered models
    for flag in ("batch_size", "steps", "image_size", "num_classes"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}.")
    if args.image_size % 16:
        raise ValueError(f"--image-size must be a multiple of 16 (every model's patch grid), got {args.image_size}.")
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}.")
    check_out_folder(args.out)


def check_out_folder(path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"--out `{path}` exists and is not a folder. Choose another path.")
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, OUT_MARKER)):
        raise FileExistsError(
            f"--out `{path}` is a folder that gpu_check did not write (it is not empty and holds no "
            f"`{OUT_MARKER}`). Choose another path or empty it."
        )


# ---------------------------------------------------------------- the children


def describe(error):
    """`Type: first line of the message`, for a row of the table."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def write_result(path, result):
    from keras_smallvit.utils.files import write_text_atomically

    write_text_atomically(path, json.dumps(result, indent=1))


def device_name():
    """The accelerator the backend computes on, in words (backend-specific by nature)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    if backend == "torch":
        import torch

        return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"gpu: {details.get('device_name', gpus[0].name)}"


def model_rows(args, result, path):
    import keras

    import keras_smallvit
    from benchmarks.model_table import forward_multiply_adds
    from benchmarks.throughput import measure, synthetic_data

    backend = keras.backend.backend()
    overrides = SMOKE_OVERRIDES if args.cpu_smoke else {}
    jit_modes = (False, True) if backend == "torch" else (True,)
    if backend == "torch" and args.cpu_smoke:
        # Inductor generates and compiles C++ for minutes per model on CPU: not a seconds-long smoke run.
        jit_modes = (False,)
        result["skipped"] = "torch.compile rows (--cpu-smoke: inductor's C++ compile takes minutes per model on CPU)"
    x, y = synthetic_data(args.image_size, args.num_classes, args.batch_size * args.steps)
    peak = result["bf16_matmul_peak_tflops"]
    multiply_adds = {}  # per model: the same for every jit mode
    for jit in jit_modes:
        for name in args.models:
            row = dict(backend=backend, model=name, precision="mixed_bfloat16", jit_compile=jit)
            try:
                if name not in multiply_adds:  # counted on the float32 graph
                    model = keras_smallvit.create_model(
                        name, num_classes=args.num_classes, image_size=args.image_size, **overrides
                    )
                    multiply_adds[name] = forward_multiply_adds(model, args.image_size)
                    keras.backend.clear_session()
                macs = multiply_adds[name]
                keras.config.set_dtype_policy("mixed_bfloat16")
                model = keras_smallvit.create_model(
                    name, num_classes=args.num_classes, image_size=args.image_size, **overrides
                )
                train, inference, first = measure(model, x, y, args.batch_size, args.steps, jit)
                row.update(train_img_s=train, inference_img_s=inference, first_step_s=first, forward_mmacs=macs / 1e6)
                if peak:
                    row["train_fraction_of_peak"] = train * 3 * 2 * macs / (peak * 1e12)
                    row["inference_fraction_of_peak"] = inference * 2 * macs / (peak * 1e12)
            except Exception as error:  # recorded in its row; the next row runs
                row["error"] = describe(error)
            finally:
                keras.config.set_dtype_policy("float32")
                keras.backend.clear_session()
            result["rows"].append(row)
            write_result(path, result)
            print(format_row(row), flush=True)


def attention_rows(args, result, path):
    """Each of `--attention-models` timed with the fused and with the explicit
    attention, one after the other in this process (`mixed_bfloat16`; XLA on
    TensorFlow/JAX, eager torch: each backend's default)."""
    import keras

    import keras_smallvit
    from benchmarks.throughput import measure
    from benchmarks.throughput import synthetic_data
    from keras_smallvit.layers.attention import use_fused_attention

    backend = keras.backend.backend()
    jit = backend != "torch"
    overrides = SMOKE_OVERRIDES if args.cpu_smoke else {}
    x, y = synthetic_data(args.image_size, args.num_classes, args.batch_size * args.steps)
    for name in args.attention_models:
        for form in ATTENTION_FORMS:
            row = dict(backend=backend, model=name, precision="mixed_bfloat16", jit_compile=jit, attention=form)
            try:
                # Built, compiled and run inside the switch: the path is chosen when the graph is traced.
                with use_fused_attention(form == "fused"):
                    keras.config.set_dtype_policy("mixed_bfloat16")
                    model = keras_smallvit.create_model(
                        name, num_classes=args.num_classes, image_size=args.image_size, **overrides
                    )
                    train, inference, first = measure(model, x, y, args.batch_size, args.steps, jit)
                row.update(train_img_s=train, inference_img_s=inference, first_step_s=first)
            except Exception as error:  # recorded in its row; the next row runs
                row["error"] = describe(error)
            finally:
                keras.config.set_dtype_policy("float32")
                keras.backend.clear_session()
            result["attention_rows"].append(row)
            write_result(path, result)
            print(format_attention_row(row), flush=True)


def float16_fit(args, result, path):
    """A short `mixed_float16` fit of all four techniques: every loss must be finite."""
    import keras
    import numpy as np

    import keras_smallvit
    from benchmarks.throughput import synthetic_data

    check = dict(model=FLOAT16_MODEL, precision="mixed_float16", steps=args.steps)
    try:
        keras.config.set_dtype_policy("mixed_float16")
        model = keras_smallvit.create_model(
            FLOAT16_MODEL,
            num_classes=args.num_classes,
            image_size=args.image_size,
            **(SMOKE_OVERRIDES if args.cpu_smoke else {}),
        )
        model.compile(  # Keras wraps the optimizer in a LossScaleOptimizer under mixed_float16
            optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
            jit_compile=keras.backend.backend() != "torch",
        )
        x, y = synthetic_data(args.image_size, args.num_classes, args.batch_size * args.steps, seed=1)
        history = model.fit(x, y, batch_size=args.batch_size, epochs=2, verbose=0)
        losses = [float(v) for v in history.history["loss"]]
        logits = keras.ops.convert_to_numpy(model.predict(x[: args.batch_size], verbose=0)).astype("float32")
        check.update(losses=losses, finite=bool(np.all(np.isfinite(losses)) and np.all(np.isfinite(logits))))
    except Exception as error:
        check.update(finite=False, error=describe(error))
    finally:
        keras.config.set_dtype_policy("float32")
        keras.backend.clear_session()
    result["float16_fit"] = check
    write_result(path, result)


def backend_worker(args):
    import keras

    from benchmarks.throughput import matmul_peak_flops

    path = args.result
    result = dict(backend=keras.backend.backend(), device=device_name(), rows=[], attention_rows=[])
    try:
        size = 512 if args.cpu_smoke else 8192
        result["bf16_matmul_peak_tflops"] = matmul_peak_flops(size=size, repeats=5, dtype="bfloat16") / 1e12
    except Exception as error:
        result["bf16_matmul_peak_tflops"] = None
        result["peak_error"] = describe(error)
    write_result(path, result)
    model_rows(args, result, path)
    float16_fit(args, result, path)
    attention_rows(args, result, path)  # last: a child out of time loses these rows only


def pipeline_worker(args):
    """The full recipe's host pipeline at the check's image size and batch."""
    import keras

    from benchmarks.input_pipeline import pipeline_images_per_second
    from keras_smallvit import training
    from keras_smallvit.training import TrainConfig

    cores = os.cpu_count() or 1
    config = TrainConfig(
        model="vit", dataset="digits", image_size=args.image_size, batch_size=args.batch_size, data_workers=cores
    )
    config.validate()
    keras.utils.set_random_seed(config.seed)
    train_data = training.load_split(config, "train")
    config = training.resolve_data_settings(config, train_data)
    batches = 4 if args.cpu_smoke else 40
    result = dict(cores=cores, image_size=args.image_size, batch_size=args.batch_size, augmentation=config.augmentation)
    for mode in ("host", "device"):
        dataset = training.train_dataset(train_data, config, batch_augmentation=mode)
        result[f"{mode}_img_s"] = pipeline_images_per_second(dataset, batches)
        result[f"{mode}_img_s_per_core"] = result[f"{mode}_img_s"] / cores
    write_result(args.result, result)


# ---------------------------------------------------------------- the parent


def run_child(job, args, backend, result_path, forwarded):
    env = dict(os.environ, KERAS_BACKEND=backend)
    if args.cpu_smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run, even on a machine with a GPU
    command = [sys.executable, "-m", "benchmarks.gpu_check", *forwarded, "--worker", job, "--result", result_path]
    start = time.perf_counter()
    try:
        process = subprocess.run(
            command, env=env, cwd=REPO_ROOT, timeout=args.timeout, capture_output=True, text=True
        )
        status = "ok" if process.returncode == 0 else f"exit code {process.returncode}"
        tail = (process.stdout + process.stderr)[-2000:] if process.returncode else ""
    except subprocess.TimeoutExpired as expired:
        status = f"timed out after {args.timeout:.0f} s"
        output = (expired.stdout or b"") + (expired.stderr or b"")
        tail = (output.decode(errors="replace") if isinstance(output, bytes) else output)[-2000:]
    seconds = time.perf_counter() - start
    result = {}
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
    result.update(status=status, seconds=seconds)
    if tail:
        result["output_tail"] = tail
    print(f"{job} on {backend}: {status} ({seconds:.0f} s)", flush=True)
    return result


def forwarded_args(args):
    values = [
        "--models", ",".join(args.models), "--attention-models", ",".join(args.attention_models),
        "--batch-size", str(args.batch_size), "--steps", str(args.steps),
        "--image-size", str(args.image_size), "--num-classes", str(args.num_classes),
    ]  # fmt: skip
    return values + (["--cpu-smoke"] if args.cpu_smoke else [])


def format_row(row):
    """A Markdown table row (the ratios exist once `add_ratios` has run)."""
    if "error" in row:
        return f"| {row['backend']} | `{row['model']}` | {row['jit_compile']} | error: {row['error']} | | | | |"
    fraction = row.get("train_fraction_of_peak")
    cells = [
        row["backend"], f"`{row['model']}`", str(row["jit_compile"]), f"{row['train_img_s']:.1f}",
        f"{row['train_vs_vit']:.2f}" if "train_vs_vit" in row else "-", f"{row['inference_img_s']:.1f}",
        f"{row['inference_vs_vit']:.2f}" if "inference_vs_vit" in row else "-",
        "-" if fraction is None else f"{fraction:.1%}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def format_attention_row(row):
    """A Markdown row of the fused-vs-explicit table (its ratio once `add_ratios` has run)."""
    cells = [row["backend"], f"`{row['model']}`", str(row["jit_compile"]), row["attention"]]
    if "error" in row:
        return "| " + " | ".join(cells + [f"error: {row['error']}", "", "", ""]) + " |"
    cells += [
        f"{row['train_img_s']:.1f}", f"{row['inference_img_s']:.1f}",
        f"{row['train_fused_vs_explicit']:.2f}" if "train_fused_vs_explicit" in row else "-",
        f"{row['inference_fused_vs_explicit']:.2f}" if "inference_fused_vs_explicit" in row else "-",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def add_ratios(report):
    """Each row's img/s against the first model's, same backend and jit mode
    (same process); each fused attention row's against the explicit row of
    its model."""
    for backend in report["backends"].values():
        baselines = {}
        for row in backend.get("rows", []):
            if "error" in row:
                continue
            base = baselines.setdefault(row["jit_compile"], row)
            row["train_vs_vit"] = row["train_img_s"] / base["train_img_s"]
            row["inference_vs_vit"] = row["inference_img_s"] / base["inference_img_s"]
        rows = [row for row in backend.get("attention_rows", []) if "error" not in row]
        explicit = {row["model"]: row for row in rows if row["attention"] == "explicit"}
        for row in rows:
            base = explicit.get(row["model"])
            if row["attention"] == "fused" and base is not None:
                row["train_fused_vs_explicit"] = row["train_img_s"] / base["train_img_s"]
                row["inference_fused_vs_explicit"] = row["inference_img_s"] / base["inference_img_s"]


def markdown(report):
    lines = [
        f"# GPU check, {report['date']}",
        "",
        f"{report['image_size']} px, {report['num_classes']} classes, batch {report['batch_size']}, "
        f"{report['steps']} timed steps per row{' (--cpu-smoke)' if report['cpu_smoke'] else ''}. "
        f"Ratios are against `{report['models'][0]}` in the same process.",
        "",
        "| backend | device | bf16 matmul peak | child |",
        "|---|---|---|---|",
    ]
    for name, backend in report["backends"].items():
        peak = backend.get("bf16_matmul_peak_tflops")
        lines.append(
            f"| {name} | {backend.get('device', '-')} | {'-' if peak is None else f'{peak:.1f} TFLOP/s'} | "
            f"{backend['status']}, {backend['seconds']:.0f} s |"
        )
    lines += [
        "",
        "Training and inference under `mixed_bfloat16` (jit: XLA on TensorFlow/JAX, `torch.compile` on torch):",
        "",
        "| backend | model | jit | train img/s | vs first | infer img/s | vs first | train FLOP/s of peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend in report["backends"].values():
        lines += [format_row(row) for row in backend.get("rows", [])]
    lines += [f"\nSkipped on {name}: {b['skipped']}" for name, b in report["backends"].items() if "skipped" in b]
    attention = [row for b in report["backends"].values() for row in b.get("attention_rows", [])]
    if attention:
        lines += [
            "",
            "Fused (`keras.ops.dot_product_attention`) vs explicit attention, `mixed_bfloat16`, "
            "each backend's default (XLA on TensorFlow/JAX, eager torch), same process:",
            "",
            "| backend | model | jit | attention | train img/s | infer img/s | train fused/explicit | infer fused/explicit |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [format_attention_row(row) for row in attention]
    lines += ["", "`mixed_float16` fit (losses must stay finite):", ""]
    for name, backend in report["backends"].items():
        check = backend.get("float16_fit")
        if check is None:
            lines.append(f"- {name}: not run ({backend['status']})")
        elif "error" in check:
            lines.append(f"- {name}: `{check['model']}` FAILED: {check['error']}")
        else:
            losses = ", ".join(f"{v:.3f}" for v in check["losses"])
            lines.append(f"- {name}: `{check['model']}` losses per epoch {losses}: {'finite' if check['finite'] else 'NOT FINITE'}")
    pipeline = report.get("pipeline")
    if pipeline and "host_img_s" in pipeline:
        fastest = max(
            (row["train_img_s"] for b in report["backends"].values() for row in b.get("rows", []) if "train_img_s" in row),
            default=None,
        )
        lines += [
            "",
            f"Input pipeline (full recipe, {pipeline['augmentation']}, {pipeline['cores']} cores): host mode "
            f"{pipeline['host_img_s']:.0f} img/s ({pipeline['host_img_s_per_core']:.0f} per core), device mode "
            f"{pipeline['device_img_s']:.0f} img/s ({pipeline['device_img_s_per_core']:.0f} per core).",
        ]
        if fastest:
            lines.append(
                f"The fastest training row ({fastest:.0f} img/s) needs about "
                f"{fastest / pipeline['host_img_s_per_core']:.1f} host cores in host mode, "
                f"{fastest / pipeline['device_img_s_per_core']:.1f} in device mode."
            )
    elif pipeline:
        lines += ["", f"Input pipeline: {pipeline['status']}"]
    failures = report["problems"]
    lines += ["", "Problems: " + ("; ".join(failures) if failures else "none."), ""]
    return "\n".join(lines)


def problems(report):
    found = []
    for name, backend in report["backends"].items():
        if backend["status"] != "ok":
            found.append(f"{name} child {backend['status']}")
        found += [f"{name} `{row['model']}` jit={row['jit_compile']}: {row['error']}" for row in backend.get("rows", []) if "error" in row]
        found += [
            f"{name} `{row['model']}` {row['attention']} attention: {row['error']}"
            for row in backend.get("attention_rows", []) if "error" in row
        ]  # fmt: skip
        check = backend.get("float16_fit")
        if check is not None and not check["finite"]:
            found.append(f"{name} mixed_float16 fit: {check.get('error', 'a loss or logit is not finite')}")
    pipeline = report.get("pipeline")
    if pipeline is not None and pipeline["status"] != "ok":
        found.append(f"input pipeline child {pipeline['status']}")
    return found


def write_report(out, report):
    from keras_smallvit.utils.files import write_text_atomically

    check_out_folder(out)  # again: the folder may have changed while the children ran
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, OUT_MARKER), "a").close()
    write_text_atomically(os.path.join(out, "gpu_check.json"), json.dumps(report, indent=1))
    write_text_atomically(os.path.join(out, "gpu_check.md"), markdown(report))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return pipeline_worker(args) if args.worker == "pipeline" else backend_worker(args)
    validate(args)
    report = dict(
        date=time.strftime("%Y-%m-%d %H:%M"),
        cpu_smoke=args.cpu_smoke,
        models=args.models,
        attention_models=args.attention_models,
        image_size=args.image_size,
        num_classes=args.num_classes,
        batch_size=args.batch_size,
        steps=args.steps,
        backends={},
    )
    forwarded = forwarded_args(args)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        for backend in args.backends:
            path = os.path.join(scratch, f"{backend}.json")
            report["backends"][backend] = run_child(backend, args, backend, path, forwarded)
        if args.pipeline:
            report["pipeline"] = run_child("pipeline", args, args.backends[0], os.path.join(scratch, "pipeline.json"), forwarded)
    add_ratios(report)
    report["problems"] = problems(report)
    write_report(args.out, report)
    print(markdown(report))
    print(f"written: {os.path.join(args.out, 'gpu_check.json')} and gpu_check.md")
    return report


if __name__ == "__main__":
    main()
