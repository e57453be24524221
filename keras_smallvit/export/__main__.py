"""`python -m keras_smallvit.export MODEL OUTPUT [--format onnx] [--resize crop] [--top-k 5] [--overwrite]`.

MODEL: a `.keras` file, a run folder of `training.train` or a preset folder.
OUTPUT must not exist, be an empty folder or a previous export: anything else
(a run folder, a file) is refused before any work unless `--overwrite`.

The preprocessing and class names are the model's own (saved with it by
training). A `.keras` file saved by an older version has none: its run's
`config.json` beside it supplies the preprocessing; without one, give
`--scale/--mean/--std` or the export refuses (it would serve wrong
probabilities). `--resize` replaces the model's resize policy (its run's
`resize`; "squash" for a model saved before there was a choice).

Exports a saved classifier for serving. Also the TensorFlow-side
half of the export on PyTorch (and of ONNX on JAX): the model file is
re-opened here under `KERAS_BACKEND=tensorflow`.
"""

import argparse
import json

from keras_smallvit.images import RESIZE_POLICIES
from keras_smallvit.utils.console import quiet_frameworks


def parse_floats(text):
    """`"0.5"` -> 0.5, `"0.4,0.5,0.6"` -> [0.4, 0.5, 0.6], `"none"` -> None."""
    if text is None or text.strip().lower() == "none":
        return None
    values = [float(v) for v in text.split(",") if v.strip()]
    return values[0] if len(values) == 1 else values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras file of a classifier, a run folder or a preset folder")
    parser.add_argument("output", help="the SavedModel directory or the .onnx file to write")
    parser.add_argument("--format", default="saved_model", help="saved_model (default) or onnx")
    parser.add_argument("--scale", type=float, default=None,
                        help="replaces the model's preprocessing: uint8 pixels are multiplied by this (1/255)")
    parser.add_argument("--mean", default=None, help="subtracted after scaling: one value or one per channel")
    parser.add_argument("--std", default=None, help="divides after the mean: one value or one per channel")
    parser.add_argument("--resize", default=None, choices=RESIZE_POLICIES,
                        help="replaces the model's resize policy (how any image size becomes the model's)")
    parser.add_argument("--top-k", type=int, default=5, help="classes in the top_k_* outputs (5)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT even when it is not a previous export"
    )
    # The library's own subprocess export: OUTPUT is its temporary name, checked by the parent.
    parser.add_argument("--in-place", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serving-config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true",
                        help="leave the frameworks' start-up banners and C++ log lines on (default: hidden)")
    args = parser.parse_args(argv)
    quiet_frameworks(args.verbose)  # before Keras (the packages above it import none)

    import keras

    from keras_smallvit import register_all
    from keras_smallvit.export import serving
    from keras_smallvit.export.serving import export_for_serving
    from keras_smallvit.models.preset_folder import load_classifier

    register_all()  # the package's classes, for loading
    if args.in_place:
        serving.watch_parent()  # this process ends with the one that started it
    else:
        try:
            serving.check_output(args.output, args.overwrite)  # before loading the model
        except FileExistsError as error:
            raise SystemExit(f"error: {error}")

    try:
        model, note = load_classifier(args.model)
    except Exception as error:  # Keras's message can end in a whole layer config
        raise SystemExit(
            f"error: {args.model} does not load under the {keras.backend.backend()} backend after `import "
            f"keras_smallvit` (custom layers must be registered there): {type(error).__name__}: {str(error)[:400]}"
        )
    if note:
        print(note)
    preprocessing = dict(scale=args.scale, mean=parse_floats(args.mean), std=parse_floats(args.std))
    given = any(value is not None for value in preprocessing.values())
    if not args.in_place and not given and getattr(model, "preprocessing", None) is None:
        # Exporting it as `x / 255` would serve wrong probabilities for a normalised model.
        raise SystemExit(
            f"error: {args.model} carries no preprocessing (a model saved by an older version, with no run "
            "config.json beside it): give --scale, --mean and --std (e.g. --scale 0.00392156862745098 "
            "--mean 0.49,0.48,0.45 --std 0.25,0.24,0.26, the run's normalization_mean/normalization_std), "
            "or export its run folder."
        )
    try:
        if args.in_place:
            with open(args.serving_config) as f:
                serving._write(model, args.output, args.format, json.load(f))
        else:
            export_for_serving(
                model, args.output, args.format, overwrite=args.overwrite, top_k=args.top_k, resize=args.resize,
                **preprocessing,
            )
    except (ValueError, ImportError, FileExistsError) as error:
        raise SystemExit(f"error: {error}")
    print(f"Exported {args.model} ({keras.backend.backend()} backend) to {args.output} ({args.format}).")


if __name__ == "__main__":
    main()
