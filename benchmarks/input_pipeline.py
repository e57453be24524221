"""Is the input pipeline the bottleneck? Its images/s against the model's
training images/s, measured in the same run on the same machine.

    KERAS_BACKEND=jax python -m benchmarks.input_pipeline --config digits_sl_vit
    KERAS_BACKEND=torch python -m benchmarks.input_pipeline --config digits_sl_vit --set image_size=64

The pipeline figure is the full recipe (crop, flip, RandAugment, erasing,
CutMix/Mixup, repeated augmentation) read as fast as tf.data gives it, with
`data_workers` parallel shards; the training figure is `model.fit` on
batches already in memory (no input cost). A ratio above 1 means the
pipeline keeps up with training.
"""

import argparse
import time

import keras
import numpy as np

from keras_smallvit import training
from training.configs import get_config


def pipeline_images_per_second(dataset, batches):
    iterator = iter(dataset)
    next(iterator)  # tracing and the first shuffle buffers
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        images, _ = next(iterator)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def train_images_per_second(model, images, labels, batch_size):
    model.fit(images[:batch_size], labels[:batch_size], batch_size=batch_size, epochs=1, verbose=0)  # compile
    start = time.perf_counter()
    model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return len(images) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="digits_sl_vit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batches", type=int, default=20, help="pipeline batches timed")
    parser.add_argument("--train-batches", type=int, default=4, help="training steps timed")
    args = parser.parse_args(argv)
    config = training.apply_overrides(get_config(args.config), args.set)
    config.validate()
    keras.utils.set_random_seed(config.seed)

    train_data = training.load_split(config, "train")
    dataset = training.train_dataset(train_data, config)
    pipeline = pipeline_images_per_second(dataset, args.batches)

    image_size = train_data.images.shape[1]
    model, entry = training.build_model(config, train_data.num_classes, image_size)
    steps = training.steps_per_epoch(len(train_data), config)
    training.compile_model(model, config, entry, steps, train_data.num_classes)
    batch = config.batch_size
    images, labels = [], []
    for x, y in dataset.take(args.train_batches):
        images.append(np.asarray(x))
        labels.append(np.asarray(y))
    images, labels = np.concatenate(images), np.concatenate(labels)
    train = train_images_per_second(model, images, labels, batch)

    print(
        f"backend {keras.backend.backend()}, model {config.model}, {image_size} px, batch {batch}, "
        f"augmentation {config.augmentation}, data_workers {config.data_workers}, jit {config.jit_compile}"
    )
    print(f"input pipeline: {pipeline:8.1f} img/s")
    print(f"training:       {train:8.1f} img/s")
    print(f"pipeline / training = {pipeline / train:.2f} (above 1: the pipeline is not the bottleneck)")


if __name__ == "__main__":
    main()
