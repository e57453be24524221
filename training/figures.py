"""Attention diagnostics of a run or a model: PNG figures, a JSON of the
numbers and an index.md that shows them together.

    python -m training.figures --run runs/digits_sl_vit                 # -> runs/digits_sl_vit/inspect/
    python -m training.figures --run runs/vit --compare runs/sl_vit --out figures/
    python -m training.figures --model model.keras --images digits --out figures/
    python -m training.figures --model model.keras --images batch.npy --compare other.keras

--run reads the run folder (`last.keras`, or `best.keras` with
--checkpoint best; `config.json` for the data; `log.csv` for the learning
curves; `diagnostics/epoch_*.json`, written with `--diagnostics` during
training, for the per-epoch curves and AAL's link magnitudes). The
statistics use the first --num-images test images (the 16 the training
callback used, by default). --images takes a .npy file `(N, H, W, C)`
(float in [0, 1], or uint8) or a dataset name (`digits`, `cifar10`,
`folder:<path>`, ...: its test split). --compare adds a second run or
model file on the same images (e.g. ViT against CB-ViT).

Figures (each skipped with a stated reason when it does not apply):
temperature.png (SPT/LSA Fig. 3), sharpness.png (Fig. 4), density.png (CB),
sata.png (SATA Figs. 1 and 3), class_token_maps.png (SPT/LSA Fig. 5, last
layer and rollout), aal_links.png (AAL Fig. 2), learning_curves.png,
epochs.png.
"""

import argparse
import csv
import dataclasses
import json
import os
import sys

FIGURES = ("temperature", "sharpness", "density", "sata", "class_token_maps", "aal_links", "learning_curves", "epochs")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="RUN_DIR", help="a run folder of python -m training.train")
    source.add_argument("--model", metavar="FILE", help="a .keras model file")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last", help="with --run (default: last)")
    parser.add_argument("--images", metavar="NPY_OR_DATASET", default=None,
                        help="a .npy batch or a dataset name (test split); default with --run: the run's dataset")
    parser.add_argument("--data-dir", default=None, help="data directory of that dataset (TFDS, Tiny-ImageNet)")
    parser.add_argument("--compare", metavar="RUN_DIR_OR_FILE", default=None,
                        help="a second run folder or .keras file, shown next to the first")
    parser.add_argument("--labels", default=None, help="legend labels, comma-separated (default: folder/file names)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/inspect, or inspect/ next to --model)")
    parser.add_argument("--num-images", type=int, default=16, help="images for the statistics (16)")
    parser.add_argument("--show-images", type=int, default=8, help="images in the class-token figure (8)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="SATA's t for the trivial-attention statistics (default: each layer's, 0.1 without SATA)")
    return parser.parse_args(argv)


@dataclasses.dataclass
class Source:
    """One model to inspect: where it came from and what its run folder holds."""

    label: str
    model_path: str
    run_dir: str = None
    config: object = None


def _source(path, checkpoint):
    from keras_smallvit.training import TrainConfig

    if os.path.isdir(path):
        model_path = os.path.join(path, f"{checkpoint}.keras")
        if not os.path.exists(model_path):
            other = os.path.join(path, ("last" if checkpoint == "best" else "best") + ".keras")
            if not os.path.exists(other):
                raise ValueError(f"Invalid run folder {path!r}: it has no {checkpoint}.keras (nor the other checkpoint).")
            model_path = other
        config = None
        config_path = os.path.join(path, "config.json")
        if os.path.exists(config_path):
            with open(config_path) as f:
                config = TrainConfig.from_json(f.read())
        return Source(os.path.basename(os.path.normpath(path)), model_path, path, config)
    if not path.endswith(".keras") or not os.path.exists(path):
        raise ValueError(f"Invalid model {path!r}: expected a run folder or an existing .keras file.")
    return Source(os.path.splitext(os.path.basename(path))[0], path)


def _load_images(args, source, image_shape):
    """`(images float32 [0, 1], labels or None, description)` for the
    statistics (normalised per model by `_model_inputs`) and the figures."""
    import numpy as np

    from keras_smallvit.training import TrainConfig
    from keras_smallvit.training import load_split

    if args.images is not None and args.images.endswith(".npy"):
        images = np.load(args.images)
        if images.ndim != 4:
            raise ValueError(f"Invalid `--images` {args.images!r}: shape {images.shape}, expected (N, H, W, C).")
        if images.dtype == np.uint8:
            images = images.astype("float32") / 255.0
        return images[: args.num_images].astype("float32"), None, args.images
    if args.images is not None:
        config = TrainConfig(dataset=args.images, data_dir=args.data_dir, image_size=image_shape[0])
    elif source.config is not None:
        config = source.config
        if args.data_dir is not None:
            config = dataclasses.replace(config, data_dir=args.data_dir)
    else:
        raise ValueError("Invalid `--images`: None. With --model, give a .npy file or a dataset name.")
    from keras_smallvit.data import evaluation_splits

    config = dataclasses.replace(config, max_test_examples=args.num_images)
    # The split a run evaluates at the end; the same uint8 round trip as training's eval pipeline.
    split = evaluation_splits(config.dataset, config.validation_split, config.data_dir)[1]
    data = load_split(config, split)
    images = data.head_images(len(data))  # in memory or streamed (the run's data_mode)
    return images.astype("float32") / 255.0, data.labels, f"{config.dataset} {split}[:{len(data)}]"


def _model_inputs(images, source):
    """`images` in [0, 1] as `source`'s model was trained on them: with its
    run's normalisation (`config.json`), else as they are."""
    if source.config is None or not source.config.normalize or source.config.normalization_mean is None:
        return images
    from keras_smallvit.training.pipeline import normalization

    mean, std = normalization(source.config)
    return ((images - mean) / std).astype("float32")


def _read_log(run_dir):
    path = os.path.join(run_dir, "log.csv") if run_dir else None
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return list(csv.DictReader(f))


def _column_titles(logits, labels, count, class_names=None):
    """`"label cat / pred dog"` per image: the model's class names, else the indices."""
    import numpy as np

    if logits is None:
        return None
    name = (lambda i: class_names[i]) if class_names else str
    predictions = np.argmax(logits[:count], axis=-1)
    if labels is None:
        return [f"pred {name(p)}" for p in predictions]
    return [f"label {name(y)} / pred {name(p)}" for y, p in zip(labels[:count], predictions)]


def _index_markdown(summary, out):
    lines = ["# Attention diagnostics", ""]
    for entry in summary["models"]:
        lines.append(f"- **{entry['label']}**: `{entry['model_path']}` ({entry['backbone']}, "
                     f"{entry['num_layers']} attention layers)")
    lines += [f"- images: {summary['images']}", ""]
    captions = {
        "temperature": "Softmax temperature tau = 1/scale per layer (SPT/LSA Fig. 3); "
                       "dashed: the initial sqrt(head_dim).",
        "sharpness": "KL divergence from uniform and entropy of the attention rows per layer (SPT/LSA Fig. 4).",
        "density": "Attention density (normalised entropy, 1 = uniform) per layer (CB).",
        "sata": "Row maximum vs accumulated trivial attention before/after SATA, weight histograms, "
                "SATA's s (SATA Figs. 1, 3).",
        "class_token_maps": "Class-token attention of the last layer and attention rollout (SPT/LSA Fig. 5).",
        "aal_links": "AAL link magnitudes, teacher blocks x ViT layers (AAL Fig. 2).",
        "learning_curves": "Loss and top-1 per epoch (log.csv).",
        "epochs": "Temperature, density and SATA's s per layer over the epochs (training callback).",
    }
    for name in FIGURES:
        if name in summary["figures"]:
            lines += [f"## {name}", "", captions[name], "", f"![{name}]({summary['figures'][name]})", ""]
    if summary["skipped"]:
        lines += ["## Skipped", ""]
        lines += [f"- {name}: {reason}" for name, reason in summary["skipped"].items()]
        lines.append("")
    lines += ["Numbers: [diagnostics.json](diagnostics.json).", ""]
    return "\n".join(lines)


def write_figures(args):
    """Writes the figures, `diagnostics.json` and `index.md`; returns the summary dict."""
    import keras
    import numpy as np
    from tqdm.auto import tqdm

    import keras_smallvit  # noqa: F401 (registers the model classes for loading)
    from keras_smallvit import diagnostics
    from keras_smallvit.diagnostics import plots
    from keras_smallvit.utils.files import write_text_atomically

    for name in ("num_images", "show_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"Invalid `--{name.replace('_', '-')}` {getattr(args, name)}: must be >= 1.")
    sources = [_source(args.run or args.model, args.checkpoint)]
    if args.compare:
        sources.append(_source(args.compare, args.checkpoint))
    if args.labels:
        labels = [label.strip() for label in args.labels.split(",")]
        if len(labels) != len(sources):
            raise ValueError(f"Invalid `--labels` {args.labels!r}: give {len(sources)} comma-separated labels.")
        for source, label in zip(sources, labels):
            source.label = label
    elif len(sources) == 2 and sources[0].label == sources[1].label:
        sources[1].label += " (compare)"
    out = args.out or (os.path.join(args.run, "inspect") if args.run else
                       os.path.join(os.path.dirname(os.path.abspath(args.model)), "inspect"))
    os.makedirs(out, exist_ok=True)

    progress = tqdm(total=2 * len(sources) + len(FIGURES), desc="inspect", unit="step")
    models, probes, reports = [], [], []
    images = labels = description = None
    for source in sources:
        progress.set_postfix_str(f"loading {source.label}")
        model = keras.saving.load_model(source.model_path)
        diagnostics.resolve_backbone(model)  # a clear error for CNNs
        if images is None:
            images, labels, description = _load_images(args, source, model.input_shape[1:])
        elif tuple(model.input_shape[1:]) != images.shape[1:]:
            raise ValueError(
                f"Invalid `--compare` {args.compare!r}: it takes {tuple(model.input_shape[1:])} images, "
                f"the first model {images.shape[1:]}. Compare models of the same input size."
            )
        progress.update()
        progress.set_postfix_str(f"probing {source.label}")
        probe = diagnostics.probe_attention(model, _model_inputs(images, source))
        reports.append(diagnostics.attention_report(model, probe=probe, threshold=args.threshold))
        models.append(model)
        probes.append(probe)
        progress.update()

    names = [s.label for s in sources]
    figures, skipped = {}, {}

    def save(name, make):
        path = os.path.join(out, f"{name}.png")
        make(path)
        figures[name] = os.path.basename(path)

    progress.set_postfix_str("figures")
    save("temperature", lambda p: plots.plot_temperatures(reports, names, path=p))
    progress.update()
    save("sharpness", lambda p: plots.plot_sharpness(reports, names, path=p))
    progress.update()
    save("density", lambda p: plots.plot_attention_density(reports, names, path=p))
    progress.update()
    save("sata", lambda p: plots.plot_trivial_attention(reports, names, path=p))
    progress.update()

    rows, row_labels, reasons = [], [], []
    shown = min(args.show_images, len(images))
    for source, probe in zip(sources, probes):
        maps = diagnostics.class_token_maps(probe)
        if maps["last_layer"] is None:
            reasons.append(f"{source.label}: {maps['reason']}")
            continue
        rows += [maps["last_layer"][:shown], maps["rollout"][:shown]]
        row_labels += [f"{source.label}\nlast layer", f"{source.label}\nrollout"]
    if rows:
        titles = _column_titles(probes[0].logits, labels, shown, getattr(models[0], "class_names", None))
        save("class_token_maps", lambda p: plots.plot_class_token_maps(images[:shown], rows, row_labels, titles, path=p))
    if reasons:
        skipped["class_token_maps" if not rows else "class_token_maps (partly)"] = "; ".join(reasons)
    progress.update()

    epoch_reports = diagnostics.read_epoch_reports(sources[0].run_dir) if sources[0].run_dir else []
    aal = next((r["aal"] for r in reversed(epoch_reports) if "aal" in r), None)
    if aal is not None:
        layer_names = [layer["name"] for layer in reports[0]["layers"]]
        magnitudes = np.asarray(aal["link_magnitudes"])
        save("aal_links", lambda p: plots.plot_link_magnitudes(
            magnitudes, aal["teacher_block_names"],
            layer_names if len(layer_names) == magnitudes.shape[1] else None, path=p))
    else:
        skipped["aal_links"] = (
            "no AAL link magnitudes: they come from an AAL run trained with --diagnostics "
            "(diagnostics/epoch_*.json); the saved model is the student alone"
        )
    progress.update()

    histories = [(s.label, _read_log(s.run_dir)) for s in sources]
    histories = [(label, rows) for label, rows in histories if rows]
    if histories:
        save("learning_curves", lambda p: plots.plot_learning_curves(
            [rows for _, rows in histories], [label for label, _ in histories], path=p))
    else:
        skipped["learning_curves"] = "no log.csv (give --run with a run folder)"
    progress.update()

    if epoch_reports:
        save("epochs", lambda p: plots.plot_epochs(epoch_reports, path=p))
    else:
        skipped["epochs"] = "no per-epoch diagnostics (train with --diagnostics)"
    progress.update()
    progress.close()

    summary = {
        "models": [
            {"label": s.label, "model_path": s.model_path, "run_dir": s.run_dir, "backbone": r["backbone"],
             "num_layers": len(r["layers"]), "report": r}
            for s, r in zip(sources, reports)
        ],
        "images": description,
        "figures": figures,
        "skipped": skipped,
        "epochs": epoch_reports and [{"epoch": r["epoch"], "seconds": r["seconds"]} for r in epoch_reports],
        "aal": aal,
    }
    write_text_atomically(os.path.join(out, "diagnostics.json"), json.dumps(summary, indent=1))
    write_text_atomically(os.path.join(out, "index.md"), _index_markdown(summary, out))
    summary["out"] = out
    return summary


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = write_figures(args)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    print(f"wrote {len(summary['figures'])} figures, diagnostics.json and index.md to {summary['out']}")
    for name, reason in summary["skipped"].items():
        print(f"  skipped {name}: {reason}")
    return summary


if __name__ == "__main__":
    main()
