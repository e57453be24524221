"""`python -m keras_smallvit.export MODEL.keras OUTPUT [--format onnx]`.

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
    args = parser.parse_args(argv)

    import keras

    import keras_smallvit  # noqa: F401  (registers the package's layers for loading)
    from keras_smallvit.export.serving import export_for_serving

    # compile=False: the serving graph needs no loss, metrics or optimizer.
    try:
        model = keras.saving.load_model(args.model, compile=False)
    except Exception as error:  # Keras's message can end in a whole layer config
        raise SystemExit(
            f"error: {args.model} does not load under the {keras.backend.backend()} backend after `import "
            f"keras_smallvit` (custom layers must be registered there): {type(error).__name__}: {str(error)[:400]}"
        )
    try:
        export_for_serving(
            model, args.output, args.format, scale=args.scale, mean=parse_floats(args.mean), std=parse_floats(args.std)
        )
    except (ValueError, ImportError) as error:
        raise SystemExit(f"error: {error}")
    print(f"Exported {args.model} ({keras.backend.backend()} backend) to {args.output} ({args.format}).")


if __name__ == "__main__":
    main()
