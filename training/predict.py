"""Predict the classes of image files with a trained classifier.

    python -m training.predict runs/my_photos photo.jpg more_photos/
    python -m training.predict runs/my_photos/best.keras photo.jpg --top-k 3
    python -m training.predict my_preset/ photos/ --out predictions/

MODEL: a run folder of `training.train` (its best.keras), a `.keras` file
or a preset folder. Images: files (jpg, jpeg, png, bmp, gif) and folders
(every image file below them). Each image is resized and normalised as in
training (the model carries its preprocessing). Prints the top-k class
names with their probabilities, and writes `predictions.csv` and
`predictions.json` into `--out` (default: the current folder); existing
files of those names are replaced only with `--overwrite`.
"""

import argparse
import os
import sys

from training.train import quiet_console

OUTPUT_FILES = ("predictions.csv", "predictions.json")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a run folder, a .keras file or a preset folder")
    parser.add_argument("images", nargs="+", help="image files and folders")
    parser.add_argument("--top-k", type=int, default=5, help="classes per image (5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (32)")
    parser.add_argument("--out", default=".", help="folder for predictions.csv and predictions.json (.)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing predictions files in --out")
    parser.add_argument("--verbose", action="store_true",
                        help="leave the frameworks' start-up banners and C++ log lines on (default: hidden)")
    return parser.parse_args(argv)


def check_arguments(args):
    """Every check that needs no model, before anything is loaded or written."""
    if not os.path.exists(args.model):
        raise SystemExit(f"error: MODEL {args.model!r} does not exist (a run folder, a .keras file or a preset folder).")
    for path in args.images:
        if not os.path.exists(path):
            raise SystemExit(f"error: image file or folder {path!r} does not exist.")
    if args.top_k < 1:
        raise SystemExit(f"error: --top-k {args.top_k}: expected an integer >= 1.")
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size {args.batch_size}: expected an integer >= 1.")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise SystemExit(f"error: --out {args.out!r} is a file; expected a folder.")
    existing = [os.path.join(args.out, n) for n in OUTPUT_FILES if os.path.exists(os.path.join(args.out, n))]
    if existing and not args.overwrite:
        raise SystemExit(f"error: {', '.join(existing)} exist(s); give --overwrite to replace, or another --out.")


def main(argv=None):
    args = parse_args(argv)
    check_arguments(args)
    quiet_console(args.verbose)
    import keras_smallvit  # noqa: F401  (registers the layers)
    from keras_smallvit.models.preset_folder import load_classifier

    model, note = load_classifier(args.model)
    if note:
        print(note, file=sys.stderr)
    try:
        predictions = model.predict_images(args.images, top_k=args.top_k, batch_size=args.batch_size)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}")
    except AttributeError:
        raise SystemExit(f"error: {args.model} is not a classifier of keras_smallvit (no predict_images).")
    for row in predictions.rows():
        best = ", ".join(f"{c['class']} {c['probability']:.3f}" for c in row["top_k"])
        print(f"{row['source']}: {best}")
    os.makedirs(args.out, exist_ok=True)
    csv_path, json_path = (os.path.join(args.out, n) for n in OUTPUT_FILES)
    predictions.write_csv(csv_path)
    predictions.write_json(json_path)
    print(f"{len(predictions.sources)} images; wrote {csv_path} and {json_path}", file=sys.stderr)
    return predictions


if __name__ == "__main__":
    main()
