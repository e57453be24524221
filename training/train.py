"""Train a registered model with the papers' recipe; resumable.

    python -m training.train --config cifar100_sl_vit
    python -m training.train --config digits_sl_vit --model vit --epochs 5 --seed 1
    python -m training.train --config cifar100_sata_vit --set sata_lr=1e-4 --set model.depth=6
    python -m training.train --config digits_sl_vit --smoke        # seconds-long check
    python -m training.train --dataset folder:path/to/images       # your images: train/<class>/, val/ or test/<class>/
    python -m training.train --dataset folder:photos --validation-split 0.2   # one folder: photos/<class>/
    python -m training.train --config digits_sl_vit --diagnostics  # + attention statistics per epoch,
                                                                   #   figures: python -m training.figures --run <workdir>

AAL (attention links to a frozen CNN teacher; the saved model is the student):

    python -m training.train --config digits_sl_vit --aal --teacher teacher.keras
    python -m training.train --config digits_sl_vit --aal --teacher t.weights.h5 --teacher-model resnet56
    python -m training.train --config cifar100_vit --aal --teacher-model efficientnet_b3 --teacher-weights imagenet
    python -m training.train --config digits_sl_vit --aal --teacher-model resnet56 --teacher-epochs 20 \
        --aal-links alpha --aal-lambda 2000 --aal-decay 0.99@0.6667,0.98 --set 'teacher.stage_blocks=(3,3,3)'

DeiT-style logit distillation from the same kind of teacher (its logits, on the
student's one head; no distillation token), alone or with --aal:

    python -m training.train --config digits_sl_vit --distillation hard --teacher-model resnet56
    python -m training.train --config digits_sl_vit --distillation soft --distillation-alpha 0.5 \
        --distillation-tau 1.0 --teacher teacher.keras
    python -m training.train --config digits_sl_vit --aal --distillation hard --teacher-model resnet56

Without --teacher, --teacher-model first trains that teacher on the same data
into <workdir>/teacher, then uses it.

Running the same command again after a crash or kill resumes from the last
finished epoch in `--workdir` and ends with the same metrics. The run folder
holds config.json, log.csv, tensorboard/, best.keras, last.keras, backup/,
metrics.json and saved_model/ (uint8 images -> probabilities; --no-export skips it).

A wrong argument or config (model names, `model.<arg>` and techniques
included: the presets are a data table), or missing data, fails within a
second with one `error:` naming it, before Keras is imported (`preflight`).
"""

import argparse
import dataclasses
import json
import os
import sys

# Flags that map onto TrainConfig fields (None = not given).
FLAG_FIELDS = {
    "model": str,
    "techniques": str,
    "dataset": str,
    "data_dir": str,
    "image_size": int,
    "epochs": int,
    "warmup_epochs": int,
    "batch_size": int,
    "lr": float,
    "precision": str,
    "seed": int,
    "workdir": str,
    "steps_per_epoch": int,
    "validation_split": float,
}

DEFAULT_CONFIG = "digits_sl_vit"
FOLDER_CONFIG = "folder_sl_vit"  # the generic small-data recipe for a folder of your images

# Teacher flags -> TrainConfig fields (they need --aal or --distillation).
TEACHER_FLAGS = {
    "aal_teacher": "--teacher",
    "aal_teacher_model": "--teacher-model",
    "aal_teacher_epochs": "--teacher-epochs",
}
# Distillation flags -> TrainConfig fields (they need --distillation).
DISTILLATION_FLAGS = {
    "distillation_alpha": "--distillation-alpha",
    "distillation_tau": "--distillation-tau",
}
# AAL flags -> TrainConfig fields (they need --aal).
AAL_FLAGS = {
    "aal_lambda": "--aal-lambda",
    "aal_decay": "--aal-decay",
    "aal_links": "--aal-links",
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None,
                        help=f"a module of training/configs (default: {FOLDER_CONFIG} for --dataset folder:PATH, "
                             f"else {DEFAULT_CONFIG})")
    for field, kind in FLAG_FIELDS.items():
        parser.add_argument("--" + field.replace("_", "-"), dest=field, type=kind, default=None)
    parser.add_argument("--jit-compile", dest="jit_compile", choices=("auto", "true", "false"), default=None)
    parser.add_argument("--distribute", action="store_true", default=None, help="data parallel over all devices")
    parser.add_argument("--cpu-devices", type=int, default=None, help="split the CPU into N devices (testing --distribute)")
    parser.add_argument("--job-addresses", dest="job_addresses", default=None, metavar="HOST:PORT,...",
                        help="data parallel over several processes (hosts): one host:port per process, process "
                             "0's first; run the same command in each with its --process-id (JAX, TensorFlow)")
    parser.add_argument("--process-id", dest="process_id", type=int, default=None,
                        help="this process's index in --job-addresses (0 writes the run folder)")
    parser.add_argument("--no-export", dest="export", action="store_false", default=None)
    parser.add_argument("--diagnostics", action="store_true", default=None,
                        help="attention statistics of 16 test images after every epoch (TensorBoard + "
                             "<workdir>/diagnostics/); plot with python -m training.figures --run <workdir>")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override any TrainConfig field (model.<arg>=... for create_model arguments)")
    parser.add_argument("--smoke", action="store_true", help="shrink everything to a seconds-long run")
    parser.add_argument("--restart", action="store_true",
                        help="discard the run in --workdir (exactly the files it wrote) and start over, "
                             "instead of resuming")
    # --- AAL ---
    parser.add_argument("--aal", action="store_true", default=None, help="attention-link regularization (AAL)")
    parser.add_argument("--teacher", "--teacher-weights", dest="aal_teacher", default=None, metavar="PATH",
                        help="the teacher of --aal / --distillation: a .keras file, a run folder (its last.keras), "
                             "a .weights.h5 file of --teacher-model, or 'imagenet' (--teacher-model "
                             "efficientnet_b3 with keras.applications' ImageNet weights, from Keras' cache; --aal, and "
                             "--distillation on --dataset imagenet2012, where it keeps Keras' ImageNet classifier)")
    parser.add_argument("--teacher-model", dest="aal_teacher_model", default=None, metavar="NAME",
                        help="the teacher's architecture; alone, a teacher run is trained first")
    parser.add_argument("--teacher-epochs", dest="aal_teacher_epochs", type=int, default=None,
                        help="epochs of that teacher run (default: --epochs)")
    parser.add_argument("--aal-lambda", dest="aal_lambda", type=float, default=None, help="initial lambda (2000)")
    parser.add_argument("--aal-decay", dest="aal_decay", default=None,
                        help="lambda decay per epoch, e.g. 0.99 or 0.99@0.6667,0.98 (default)")
    parser.add_argument("--aal-links", dest="aal_links", choices=("full", "alpha", "beta"), default=None)
    # --- DeiT-style logit distillation ---
    parser.add_argument("--distillation", dest="distillation", choices=("soft", "hard"), default=None,
                        help="distill the teacher's logits into the student's head (DeiT soft / hard)")
    parser.add_argument("--distillation-alpha", dest="distillation_alpha", type=float, default=None,
                        help="weight of the teacher term, in [0, 1] (0.5)")
    parser.add_argument("--distillation-tau", dest="distillation_tau", type=float, default=None,
                        help="temperature of soft distillation, > 0 (1.0)")
    parser.add_argument("--list", action="store_true", help="list configs and models, then exit")
    parser.add_argument("--verbose", action="store_true",
                        help="leave the frameworks' start-up banners and C++ log lines on (default: hidden)")
    return parser.parse_args(argv)


def resolve_config(args, backend=True):
    """The `TrainConfig` of the command line, validated.

    Args:
        args: `parse_args`'s namespace.
        backend: the whole `TrainConfig.validate()`; False: its
            `check_fields()` only, which imports no Keras (for `preflight`).
    """
    from keras_smallvit.training.config import apply_overrides
    from keras_smallvit.training.config import smoke
    from training.configs import get_config

    from keras_smallvit.data import FOLDER_PREFIX

    folder = args.dataset is not None and args.dataset.startswith(FOLDER_PREFIX)
    name = args.config or (FOLDER_CONFIG if folder else DEFAULT_CONFIG)
    config = get_config(name)
    if folder and args.config is None and args.workdir is None:
        # One run folder per image folder: another folder never resumes this run.
        folder_name = os.path.basename(os.path.normpath(args.dataset[len(FOLDER_PREFIX):])) or "images"
        config = dataclasses.replace(config, workdir=os.path.join("runs", f"folder_{folder_name}"))
    flags = {f: getattr(args, f) for f in list(FLAG_FIELDS) + ["jit_compile", "distribute", "export", "diagnostics"]}
    flags = {k: v for k, v in flags.items() if v is not None}
    if "techniques" in flags:
        flags["techniques"] = tuple(t for t in flags["techniques"].split(",") if t)
    if "jit_compile" in flags:
        flags["jit_compile"] = {"auto": "auto", "true": True, "false": False}[flags["jit_compile"]]
    named = {**TEACHER_FLAGS, **DISTILLATION_FLAGS, **AAL_FLAGS}
    teacher_flags = {f: getattr(args, f) for f in ["aal", "distillation"] + list(named) if getattr(args, f) is not None}
    flags.update(teacher_flags)
    config = apply_overrides(config, flags)
    config = apply_overrides(config, args.assignments)
    for options, needed, ok in [
        (AAL_FLAGS, "`--aal`", config.aal),
        (DISTILLATION_FLAGS, "`--distillation`", config.distillation is not None),
        (TEACHER_FLAGS, "`--aal` or `--distillation`", config.uses_teacher()),
    ]:
        given = [options[f] for f in teacher_flags if f in options]
        if given and not ok:
            raise ValueError(f"Invalid `{' '.join(given)}`: these options need {needed}.")
    if args.smoke:
        # What the command line sets explicitly wins over the smoke budget.
        explicit = set(flags) | {a.split("=", 1)[0].strip() for a in args.assignments}
        config = smoke(config, keep=explicit)
        if args.workdir is None:
            config = dataclasses.replace(config, workdir=config.workdir + "_smoke")
    return config.validate() if backend else config.check_fields()


def preflight(args):
    """Checks the command line before Keras and TensorFlow are imported.

    The same code as the run (`resolve_config`, without the checks that need
    Keras; the models from their data table) and
    `keras_smallvit.data.check_data` for the data, so
    that a wrong argument or missing data fails within a second or two.
    `main` then imports Keras and checks everything again.

    Args:
        args: `parse_args`'s namespace.

    Raises:
        ValueError: an invalid argument or config, as `resolve_config`.
        FileNotFoundError: missing data, as the data loaders.
    """
    # `keras_smallvit` and the modules used here import no Keras (lazy `__init__`s).
    from keras_smallvit.data import check_data

    config = resolve_config(args, backend=False)
    check_cluster_flags(args)
    check_data(config.dataset, config.data_dir, config.validation_split)


def check_cluster_flags(args):
    """`--job-addresses` and `--process-id` come together and are valid."""
    from keras_smallvit.training.distribute import parse_job_addresses

    if (args.job_addresses is None) != (args.process_id is None):
        raise ValueError("Invalid `--job-addresses`/`--process-id`: give both (a multi-process run) or neither.")
    if args.job_addresses is not None:
        parse_job_addresses(args.job_addresses, args.process_id)


def peer_failure_hint(args, error):
    """The way on after a collective of a multi-process run failed (another
    process died or its connection broke), else ""."""
    text = str(error).lower()
    if args.job_addresses is None or not any(word in text for word in ("gloo", "nccl", "heartbeat", "coordination")):
        return ""
    return (
        "\nA process of this multi-process run failed or lost its connection (see its own output). The run "
        "folder keeps its last finished epoch: the same commands, on every host, resume it."
    )


def exit_after_peer_failure(message):
    """Prints `message` and ends a process of a multi-process run whose peer
    failed, with status 1, at once: the normal exit would first wait in
    JAX's shutdown barrier for the dead peer until the coordination service
    declares it dead (the heartbeat timeout, a minute). Its writes are
    done: the run folder keeps its last finished epoch. In one process (the
    tests call `main`), a `SystemExit` as for any other error."""
    from keras_smallvit.training.distribute import num_processes

    if num_processes() == 1:
        raise SystemExit(message)
    import logging

    print(message, file=sys.stderr, flush=True)
    logging.shutdown()  # what the normal exit would flush
    sys.stdout.flush()
    os._exit(1)


def quiet_console(verbose=False):
    """`keras_smallvit.utils.console.quiet_frameworks` (TensorFlow's banners
    and C++ log lines hidden, unless `verbose`), imported without Keras: it
    must run before Keras imports TensorFlow. Every command line calls it
    before it imports Keras."""
    from keras_smallvit.utils.console import quiet_frameworks

    quiet_frameworks(verbose)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.list:
        try:
            preflight(args)
        except (ValueError, FileNotFoundError) as error:
            raise SystemExit(f"error: {error}")
    quiet_console(args.verbose)
    if args.cpu_devices:
        # Before the backend runs anything.
        from keras_smallvit.training.distribute import use_virtual_cpu_devices

        use_virtual_cpu_devices(args.cpu_devices)
    import keras

    if args.job_addresses is not None and not args.list:
        # Before the backend runs anything (TensorFlow: the strategy starts the worker's server).
        from keras_smallvit.training.distribute import initialize_processes

        try:
            initialize_processes(args.job_addresses, args.process_id)
        except ValueError as error:
            raise SystemExit(f"error: {error}")
    import keras_smallvit
    from keras_smallvit.training.callbacks import TrainingDiverged
    from keras_smallvit.training.run_guard import RunFolderInUse
    from keras_smallvit.utils.files import WriteError
    from training.configs import list_configs

    if args.list:
        print("configs:", ", ".join(list_configs()))
        print("models: ", ", ".join(keras_smallvit.list_models()))
        return None
    try:
        config = resolve_config(args)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    print(f"{config.model} on {config.dataset}, backend {keras.backend.backend()}, workdir {config.workdir}")
    from keras_smallvit.training import train  # TensorFlow (tf.data): after the checks

    try:
        metrics = train(config, restart=args.restart)
    except (ValueError, FileNotFoundError, RunFolderInUse, TrainingDiverged, WriteError) as error:
        # The library's own errors name the argument or file and the way on: no traceback.
        # (WriteError: an OSError of its writes, e.g. a full disk, naming the path and the free
        # space; any other OSError keeps its traceback.)
        hint = peer_failure_hint(args, error)
        if hint:
            exit_after_peer_failure(f"error: {error}{hint}")
        raise SystemExit(f"error: {error}")
    except RuntimeError as error:
        hint = peer_failure_hint(args, error)
        if not hint:
            raise
        exit_after_peer_failure(f"error: {error}{hint}")
    print(json.dumps(metrics, indent=2))
    print(f"final top-1 {metrics['final_top1']:.4f}, best top-1 {metrics['best_top1']:.4f} "
          f"(epoch {metrics['best_epoch']}); run folder {os.path.abspath(config.workdir)}")
    return metrics


if __name__ == "__main__":
    main()
