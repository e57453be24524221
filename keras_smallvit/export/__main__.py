"""`python -m keras_smallvit.export MODEL.keras OUTPUT [--format onnx] [--overwrite]`.

OUTPUT must not exist, be an empty folder or a previous export: anything else
(a run folder, a file) is refused before any work unless `--overwrite`.

Exports a saved `.keras` classifier for serving. Also the TensorFlow-side
half of the export on PyTorch (and of ONNX on JAX): the model file is
re-opened here under `KERAS_BACKEND=tensorflow`.
"""

import argparse


def parse_floats(text):
    """`"0.5"` -> 0.5, `"0.4,0.5,0.6"` -> [0.4, 0.5, 0.6], `"none"` -> None."""
    if text is None or text.strip().lower() == "none":
        return None
    values = [float(v) for v in text.split(",") if v.strip()]
    return values[0] if len(values) == 1 else values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras file of a classifier (returns logits)")
    parser.add_argument("output", help="the SavedModel directory or the .onnx file to write")
    parser.add_argument("--format", default="saved_model", help="saved_model (default) or onnx")
    parser.add_argument("--scale", type=float, default=1 / 255, help="uint8 pixels are multiplied by this (1/255)")
    parser.add_argument("--mean", default=None, help="subtracted after scaling: one value or one per channel")
    parser.add_argument("--std", default=None, help="divides after the mean: one value or one per channel")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT even when it is not a previous export"
    )
    # The library's own subprocess export: OUTPUT is its temporary name, checked by the parent.
    parser.add_argument("--in-place", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import keras

    import keras_smallvit  # noqa: F401  (registers the package's layers for loading)
    from keras_smallvit.export import serving
    from keras_smallvit.export.serving import export_for_serving

    if args.in_place:
        serving.watch_parent()  # this process ends with the one that started it
    else:
        try:
            serving.check_output(args.output, args.overwrite)  # before loading the model
        except FileExistsError as error:
            raise SystemExit(f"error: {error}")

    # compile=False: the serving graph needs no loss, metrics or optimizer.
    try:
        model = keras.saving.load_model(args.model, compile=False)
    except Exception as error:  # Keras's message can end in a whole layer config
        raise SystemExit(
            f"error: {args.model} does not load under the {keras.backend.backend()} backend after `import "
            f"keras_smallvit` (custom layers must be registered there): {type(error).__name__}: {str(error)[:400]}"
        )
    preprocessing = dict(scale=args.scale, mean=parse_floats(args.mean), std=parse_floats(args.std))
    try:
        if args.in_place:
            serving._write(model, args.output, args.format, serving.serving_config(model, args.format, **preprocessing))
        else:
            export_for_serving(model, args.output, args.format, overwrite=args.overwrite, **preprocessing)
    except (ValueError, ImportError, FileExistsError) as error:
        raise SystemExit(f"error: {error}")
    print(f"Exported {args.model} ({keras.backend.backend()} backend) to {args.output} ({args.format}).")


if __name__ == "__main__":
    main()
