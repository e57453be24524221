"""Build-and-fit demo: SL-ViT with SATA and CB on scikit-learn's digits, then export.

    python -m training.demo [--epochs 5] [--workdir runs/demo]

The digits (1,797 real 8x8 handwritten digits that ship with scikit-learn)
are upsampled to 32x32 RGB so the papers' 32 px config applies unchanged.
Ends with a `.keras` file and, on TensorFlow and JAX, a SavedModel for
serving. Both are written to a temporary path first and renamed into place,
so an interrupted run never leaves a half-written model where a good one was.
"""

import argparse
import os
import shutil
import time

import keras
import numpy as np

import keras_smallvit
from keras_smallvit import data


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def replace_atomically(write, final_path):
    """Calls `write(tmp_path)`, then moves the result over `final_path`.

    The temporary path keeps the extension (`model.keras` -> `model.partial.keras`),
    which `model.save` requires.
    """
    root, ext = os.path.splitext(final_path)
    tmp_path, old_path = root + ".partial" + ext, root + ".old" + ext
    _remove(tmp_path)
    write(tmp_path)
    if os.path.exists(final_path):
        os.replace(final_path, old_path)
    os.replace(tmp_path, final_path)
    _remove(old_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sl_sata_cb_vit", choices=keras_smallvit.list_models())
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=os.path.join("runs", "demo"))
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train, info = data.load_dataset("digits", "train", image_size=32)
    test, _ = data.load_dataset("digits", "test", image_size=32)
    train = train.shuffle(info.num_train, seed=args.seed).batch(args.batch_size)
    test = test.batch(256)
    model = keras_smallvit.create_model(args.model, num_classes=10, image_size=32, drop_path_rate=0.1)
    steps = args.epochs * int(np.ceil(info.num_train / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, alpha=1e-3, warmup_target=args.lr, warmup_steps=max(1, steps // 10)
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    print(f"{args.model}: {model.count_params():,} parameters, backend {keras.backend.backend()}")
    start = time.time()
    model.fit(train, epochs=args.epochs, validation_data=test, verbose=2)
    seconds = time.time() - start
    _, accuracy = model.evaluate(test, verbose=0)
    print(f"test accuracy {accuracy:.4f} after {args.epochs} epochs ({seconds:.0f} s, "
          f"{args.epochs * info.num_train / seconds:.0f} train img/s)")

    os.makedirs(args.workdir, exist_ok=True)
    keras_path = os.path.join(args.workdir, "model.keras")
    replace_atomically(model.save, keras_path)
    print(f"saved {keras_path}")
    if keras.backend.backend() in ("tensorflow", "jax"):
        export_path = os.path.join(args.workdir, "saved_model")
        replace_atomically(lambda p: model.export(p, format="tf_saved_model", verbose=False), export_path)
        print(f"exported SavedModel to {export_path}")
    else:
        print("SavedModel export needs the TensorFlow or JAX backend; the .keras file loads under either.")
    return accuracy


if __name__ == "__main__":
    main()
