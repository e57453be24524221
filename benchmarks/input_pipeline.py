"""Is the input pipeline the bottleneck? Its images/s against the model's
training images/s, measured in the same run on the same machine.

    KERAS_BACKEND=jax python -m benchmarks.input_pipeline --config digits_sl_vit
    KERAS_BACKEND=torch python -m benchmarks.input_pipeline --config digits_sl_vit --set image_size=64

Three figures, each in the same process:
1. The policy step alone, per image on one core (one sequential tf.data map
   over uint8 images): our AutoAugment and RandAugment against Keras'
   `RandAugment` layer (what the pipeline used before; it computes every op
   on every image), as ratios to Keras'.
2. The full recipe pipeline (crop, flip, policy, normalisation, erasing,
   CutMix/Mixup, repeated augmentation) read as fast as tf.data gives it,
   with `data_workers` parallel calls, for each `--augmentations` choice,
   and its img/s per worker; in "host" mode (every step in tf.data) and in
   "device" mode (`batch_augmentation="device"`: tf.data does the per-image
   uint8 steps and the random draws, and hands uint8 images to the train
   step, which normalises, erases and mixes), with device / host as a ratio.
3. `model.fit` on batches already in memory (no input cost). A ratio above 1
   means the pipeline keeps up with training.

`--policy-images 0` and `--train-batches 0` leave out figures 1 and 3.
With `--set data_mode=stream` the split is streamed
(`keras_smallvit.training.streaming`): figure 2 then includes decoding and
resizing each image from its file. Streaming at 224 px against memory at
64 px, on a generated folder of JPEG files (`--synthetic-folder`, 512
photo-like images of ImageNet's typical 500x375 in 4 classes, written once):

    python -m benchmarks.input_pipeline --config folder_sl_vit --synthetic-folder /tmp/jpegs \
        --set image_size=224 --set data_mode=stream --augmentations autoaugment --policy-images 0 --train-batches 0
    python -m benchmarks.input_pipeline --config folder_sl_vit --synthetic-folder /tmp/jpegs \
        --set image_size=64 --set data_mode=memory --augmentations autoaugment --policy-images 0 --train-batches 0
"""

import argparse
import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_smallvit import training
from keras_smallvit.training import autoaugment
from training.configs import get_config


def pipeline_images_per_second(dataset, batches):
    iterator = iter(dataset)
    next(iterator)  # tracing and the first buffers
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        _, labels = next(iterator)  # images, or the dict of "device" mode
        count += int(labels.shape[0])
    return count / (time.perf_counter() - start)


def policy_step_images_per_second(images, augment, count=2048):
    """img/s of `augment(image, key)` alone on uint8 images, one image at a
    time in one thread (one long-lived iterator, batched so that Python's
    per-element cost stays out of the figure)."""
    images = tf.constant(images)

    def step(i):
        return augment(tf.gather(images, i % len(images)), tf.stack([tf.constant(0, tf.int64), i]))

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    dataset = tf.data.Dataset.range(count + 64).map(step).with_options(options).batch(64)
    iterator = iter(dataset)
    next(iterator)  # tracing
    start = time.perf_counter()
    for _ in iterator:
        pass
    return count / (time.perf_counter() - start)


def keras_randaugment(config):
    """Keras' RandAugment layer as the pipeline used it (the baseline)."""
    layer = keras.layers.RandAugment(
        value_range=(0, 255), num_ops=config.randaugment_ops, factor=config.randaugment_factor, seed=config.seed
    )

    def keras_step(image, key):
        return layer(tf.cast(image, tf.float32))

    return keras_step


def train_images_per_second(model, images, labels, batch_size):
    model.fit(images[:batch_size], labels[:batch_size], batch_size=batch_size, epochs=1, verbose=0)  # compile
    start = time.perf_counter()
    model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return len(images) / (time.perf_counter() - start)


def write_synthetic_folder(root, count=512, classes=4, size=(375, 500), seed=0):
    """`count` JPEG files (quality 90) in `root/train/<class>/` unless there
    already: smooth colour fields with edges and a little noise, so that they
    compress and decode like photographs (noise alone decodes slower)."""
    from PIL import Image

    if os.path.isdir(os.path.join(root, "train")):
        return
    rng = np.random.default_rng(seed)
    height, width = size
    for i in range(count):
        folder = os.path.join(root, "train", f"class_{i % classes}")
        os.makedirs(folder, exist_ok=True)
        coarse = rng.integers(0, 256, (height // 25 + 1, width // 25 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        pixels = np.asarray(image).astype("int16") + rng.integers(-12, 13, (height, width, 3))
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        pixels[top: top + height // 3, left: left + width // 3] //= 2  # an object's edges
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="digits_sl_vit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--augmentations", default="autoaugment,randaugment",
                        help="pipelines to time (comma-separated: autoaugment, randaugment, none)")
    parser.add_argument("--batches", type=int, default=60, help="pipeline batches timed")
    parser.add_argument("--policy-images", type=int, default=2048, help="images timed for the policy step alone")
    parser.add_argument("--train-batches", type=int, default=4, help="training steps timed (0: none)")
    parser.add_argument("--synthetic-folder", metavar="PATH",
                        help="write 512 photo-like JPEG files there (once) and use them as the dataset")
    args = parser.parse_args(argv)
    overrides = list(args.set)
    if args.synthetic_folder:
        write_synthetic_folder(args.synthetic_folder)
        overrides.insert(0, f"dataset=folder:{args.synthetic_folder}")
    config = training.apply_overrides(get_config(args.config), overrides)
    config.validate()
    augmentations = [a.strip() for a in args.augmentations.split(",") if a.strip()]
    for augmentation in augmentations:
        dataclasses.replace(config, augmentation=augmentation).validate()
    keras.utils.set_random_seed(config.seed)

    train_data = training.load_split(config, "train")
    config = training.resolve_data_settings(config, train_data)
    image_size = train_data.image_size
    mode = "stream" if isinstance(train_data, training.streaming.StreamingData) else "memory"
    print(
        f"backend {keras.backend.backend()}, model {config.model}, {image_size} px, batch {config.batch_size}, "
        f"data_workers {config.data_workers}, data_mode {config.data_mode} ({mode}), jit {config.jit_compile}"
    )
    if args.policy_images > 0:
        policy_figures(train_data.head_images(512), config, args.policy_images)

    cores = min(config.data_workers, os.cpu_count() or 1)
    print(f"\nfull recipe pipeline ({mode}{', decoding included' if mode == 'stream' else ''}), "
          f"{config.data_workers} parallel calls on {cores} cores "
          "(device: the per-image uint8 steps and the draws here, the batch steps in the train step):")
    datasets, first_rate, first_device_rate = {}, None, None
    for augmentation in augmentations:
        variant = dataclasses.replace(config, augmentation=augmentation)
        datasets[augmentation] = training.train_dataset(train_data, variant, batch_augmentation="host")
        rate = pipeline_images_per_second(datasets[augmentation], args.batches)
        device_dataset = training.train_dataset(train_data, variant, batch_augmentation="device")
        device_rate = pipeline_images_per_second(device_dataset, args.batches)
        if augmentation == augmentations[0]:
            first_rate, first_device_rate = rate, device_rate
        print(f"  {augmentation:12s} host {rate:9.1f} img/s ({rate / cores:7.1f} per core)   "
              f"device {device_rate:9.1f} img/s ({device_rate / cores:7.1f} per core)   "
              f"device / host x{device_rate / rate:5.2f}")
    if mode == "stream":
        decoding = train_data.dataset(config.data_workers).batch(config.batch_size).repeat()
        rate = pipeline_images_per_second(decoding, args.batches)
        print(f"  {'decode + resize alone':25s} {rate:9.1f} img/s ({rate / cores:7.1f} per core)")
    if args.train_batches > 0:
        training_figures(config, train_data, datasets, augmentations, first_rate, first_device_rate, cores, args)


def policy_figures(images, config, count):
    """Figure 1: the policy step alone, one core, against Keras' RandAugment."""
    policy = config.autoaugment_policy or "cifar10"

    def ours_randaugment(image, key):
        return autoaugment.rand_augment(image, config.randaugment_ops, config.randaugment_factor, key)

    def ours_autoaugment(image, key):
        return autoaugment.auto_augment(image, policy, key)

    steps = {
        "Keras RandAugment (before)": keras_randaugment(config),
        f"RandAugment ({config.randaugment_ops} ops)": ours_randaugment,
        f"AutoAugment ({policy})": ours_autoaugment,
    }
    rates = {name: policy_step_images_per_second(images, step, count) for name, step in steps.items()}
    baseline = rates["Keras RandAugment (before)"]
    print("\npolicy step alone, one core:")
    for name, rate in rates.items():
        print(f"  {name:28s} {rate:9.1f} img/s   x{rate / baseline:5.2f} vs Keras RandAugment")


def training_figures(config, train_data, datasets, augmentations, first_rate, first_device_rate, cores, args):
    """Figure 3: `model.fit` on batches in memory, against the pipeline."""
    image_size = train_data.image_size
    model, entry = training.build_model(config, train_data.num_classes, image_size)
    steps_per_epoch = training.steps_per_epoch(len(train_data), config)
    training.compile_model(model, config, entry, steps_per_epoch, train_data.num_classes)
    batch = config.batch_size
    x, y = [], []
    for bx, by in datasets[augmentations[0]].take(args.train_batches):
        x.append(np.asarray(bx))
        y.append(np.asarray(by))
    train = train_images_per_second(model, np.concatenate(x), np.concatenate(y), batch)
    print(f"\ntraining ({config.model}): {train:9.1f} img/s")
    print(f"pipeline / training = {first_rate / train:.1f} (above 1: the pipeline is not the bottleneck); "
          f"a GPU training at N img/s needs about N / {first_rate / cores:.0f} host cores for this pipeline "
          f"(N / {first_device_rate / cores:.0f} with batch_augmentation='device')")


if __name__ == "__main__":
    main()
