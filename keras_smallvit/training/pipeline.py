"""tf.data input pipeline of the papers' recipe, for all three backends.

tf.data is backend-independent in Keras 3 (Keras preprocessing layers run on
TensorFlow inside it whatever the backend), so this module uses `tf` freely.

Repeatable and resumable by construction: every random draw is a function of
the seed and the example's position in the run. Epoch `e` visits a
permutation of `repeated_augmentation` copies of the data keyed by
`(seed, e)`; before each example is augmented, the augmentation layers'
generators are reset to `(seed, example_id)`; batch mixing draws from
`(seed, batch_id)`. A run resumed at epoch `e` therefore sees exactly the
batches an uninterrupted run sees, and `data_workers` shards augment in
parallel (each in its own prefetch thread, read back round-robin) without
changing the result.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_smallvit import data as datasets

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class InMemoryData:
    """One split as arrays: `images` uint8 `(N, H, W, 3)`, `labels` int32 `(N,)`."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __len__(self):
        return len(self.labels)


def load_split(config, split):
    """Loads `config.dataset`'s split into memory (uint8), with a progress bar.

    The small datasets of the papers fit in memory (CIFAR: 150 MB,
    Tiny-ImageNet: 1.2 GB as uint8), which makes every epoch a cheap,
    seeded permutation of indices.
    """
    from tqdm.auto import tqdm

    dataset, info = datasets.load_dataset(config.dataset, split, config.image_size, config.data_dir)
    limit = config.max_train_examples if split == "train" else config.max_test_examples
    total = info.num_train if split == "train" else info.num_test
    if limit is not None:
        dataset, total = dataset.take(limit), limit if total is None else min(limit, total)
    images, labels = [], []
    with tqdm(total=total, desc=f"loading {config.dataset} {split}", unit="img", leave=False) as bar:
        for batch_images, batch_labels in dataset.batch(1024).as_numpy_iterator():
            images.append(np.round(batch_images * 255.0).astype("uint8"))
            labels.append(batch_labels.astype("int32"))
            bar.update(len(batch_labels))
    return InMemoryData(np.concatenate(images), np.concatenate(labels), info.num_classes)


def steps_per_epoch(num_examples, config):
    steps = (num_examples * config.repeated_augmentation) // config.batch_size
    if steps < 1:
        raise ValueError(
            f"Invalid `batch_size` {config.batch_size}: larger than the "
            f"{num_examples * config.repeated_augmentation} training images of one epoch."
        )
    return steps if config.steps_per_epoch is None else min(steps, config.steps_per_epoch)


def image_augmentation(config, image_size, seed):
    """Per-image augmentation on float32 images in [0, 255]: random crop after
    zero padding, horizontal flip, RandAugment, random erasing (Keras layers)."""
    steps = []
    if config.crop_padding:
        # The zero padding itself is done in `train_dataset` (tf.pad):
        # ZeroPadding2D is not a tf.data layer on JAX/torch.
        steps.append(keras.layers.RandomCrop(image_size, image_size, seed=seed))
    if config.horizontal_flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed + 1))
    if config.augmentation == "randaugment":
        steps.append(
            keras.layers.RandAugment(
                value_range=(0, 255),
                num_ops=config.randaugment_ops,
                factor=config.randaugment_factor,
                seed=seed + 2,
            )
        )
    if config.random_erasing:
        p = config.random_erasing
        # A single float would draw the probability from [0, p]; a pair fixes it.
        steps.append(keras.layers.RandomErasing(factor=(p, p), value_range=(0, 255), seed=seed + 3))
    # `Pipeline`, not `Sequential`: Sequential fails inside tf.data on JAX/torch.
    return keras.layers.Pipeline(steps) if steps else None


def _one_hot(labels, num_classes):
    return tf.one_hot(labels, num_classes, dtype=tf.float32)


def _seed_generators(layer):
    """The generators `layer` and its sub-layers draw from inside tf.data
    (TensorFlow ones, whatever the Keras backend: Keras preprocessing layers
    switch to TensorFlow in tf.data and keep a generator per backend)."""
    generators = []
    for sublayer in layer._flatten_layers(include_self=True):
        if hasattr(sublayer, "generator") and hasattr(sublayer, "seed"):
            sublayer.backend.set_backend("tensorflow")
            try:
                generators.append(sublayer._get_seed_generator("tensorflow"))
            finally:
                sublayer.backend.reset()
    return generators


def _reseeded(generators, seed, example_id):
    """Resets every generator to a state that depends only on `(seed, example_id)`."""
    updates = []
    for k, generator in enumerate(generators):
        state = tf.stack([tf.cast(seed + 7919 * k, tf.int64), tf.cast(example_id, tf.int64)])
        updates.append(generator.state.assign(tf.cast(state, generator.state.dtype)))
    return updates


def train_dataset(train_data, config, initial_epoch=0):
    """The training batches of epochs `initial_epoch .. config.epochs - 1`
    (`steps_per_epoch` each): `((B, H, W, 3) float32 in [0, 1], (B, C) one-hot)`.

    Mixed batches (Mixup or CutMix) carry mixed one-hot labels.
    """
    images, labels = train_data.images, train_data.labels
    num_examples, image_size = len(train_data), images.shape[1]
    steps = steps_per_epoch(num_examples, config)
    per_epoch = steps * config.batch_size
    seed = config.seed

    def epoch_examples(epoch):
        copies = tf.tile(tf.range(num_examples, dtype=tf.int64), [config.repeated_augmentation])
        order = tf.random.experimental.stateless_shuffle(copies, seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        example_ids = epoch * per_epoch + tf.range(per_epoch, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((example_ids, order[:per_epoch]))

    examples = tf.data.Dataset.range(initial_epoch, config.epochs).flat_map(epoch_examples)
    # Captured eager tensors are passed to tf.data by reference, not copied into the graph.
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    workers = max(1, config.data_workers)
    shards = []
    for shard in range(workers):
        augment = image_augmentation(config, image_size, seed=seed)
        generators = _seed_generators(augment) if augment is not None else []

        def load(example_id, index, augment=augment, generators=generators):
            image = tf.cast(tf.gather(images_t, index), tf.float32)
            if augment is not None:
                with tf.control_dependencies(_reseeded(generators, seed, example_id)):
                    if config.crop_padding:
                        pad = config.crop_padding
                        image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
                    image = augment(image)
            return image, tf.gather(labels_t, index)

        # Sequential map inside a shard: one example's reseed-then-draw at a time.
        shards.append(examples.shard(workers, shard).map(load).prefetch(16))
    examples_per_shard = -(-per_epoch * (config.epochs - initial_epoch) // workers)
    # Finite round-robin choice: an endless one never ends the dataset.
    choice = tf.data.Dataset.range(workers).repeat(examples_per_shard)
    ordered = tf.data.Dataset.choose_from_datasets(shards, choice, stop_on_empty_dataset=False)

    num_classes = train_data.num_classes
    batches = ordered.batch(config.batch_size, drop_remainder=True)
    batches = batches.map(lambda x, y: (x, _one_hot(y, num_classes)))
    mix = batch_mixing(config, seed=seed)
    if mix is not None:
        batch_ids = tf.data.Dataset.range(initial_epoch * steps, config.epochs * steps)
        batches = tf.data.Dataset.zip(batch_ids, batches).map(mix)
    return batches.map(lambda x, y: (x / 255.0, y), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def batch_mixing(config, seed):
    """`(batch_id, (images, one_hot)) -> (images, labels)`: with probability
    `mix_prob`, CutMix or Mixup (equal chance, as the official code); every
    draw is keyed by `(seed, batch_id)`."""
    layers = []
    if config.cutmix_alpha > 0:
        layers.append(keras.layers.CutMix(factor=config.cutmix_alpha, seed=seed))
    if config.mixup_alpha > 0:
        layers.append(keras.layers.MixUp(alpha=config.mixup_alpha, seed=seed + 1))
    if not layers or config.mix_prob == 0:
        return None

    generators = [g for layer in layers for g in _seed_generators(layer)]

    def mix(batch_id, batch):
        images, labels = batch
        draw = tf.random.stateless_uniform([2], seed=tf.stack([tf.cast(seed, tf.int64), batch_id]))
        branches = [lambda: (images, labels)]
        for layer in layers:
            def apply(layer=layer):
                with tf.control_dependencies(_reseeded(generators, seed + 1, batch_id)):
                    out = layer({"images": tf.identity(images), "labels": tf.identity(labels)})
                return out["images"], out["labels"]

            branches.append(apply)
        # 0: no mixing; 1..len(layers): one of the layers with equal chance.
        which = tf.where(
            draw[0] < config.mix_prob,
            1 + tf.cast(tf.minimum(draw[1] * len(layers), len(layers) - 1), tf.int32),
            0,
        )
        return tf.switch_case(which, branches)

    return mix


def eval_dataset(eval_data, config):
    """Test batches in a fixed order, `(float32 [0, 1] images, one-hot labels)`."""
    num_classes = eval_data.num_classes
    dataset = tf.data.Dataset.from_tensor_slices((eval_data.images, eval_data.labels))
    dataset = dataset.batch(config.eval_batch_size)
    return dataset.map(
        lambda x, y: (tf.cast(x, tf.float32) / 255.0, _one_hot(y, num_classes)), num_parallel_calls=AUTOTUNE
    ).prefetch(AUTOTUNE)
