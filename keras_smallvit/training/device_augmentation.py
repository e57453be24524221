"""The recipe's batch-level steps inside the compiled train step.

`DeviceBatchAugmentation(model, mean, std, fill)` wraps a classifier for
`model.fit` on the dict batches of `train_dataset(...,
batch_augmentation="device")`: uint8 images after the per-image uint8
steps, plus the random draws the pipeline made for the batch-level steps
(by the same keys as in "host" mode). On the accelerator it normalises,
erases, mixes the images (CutMix/Mixup) and the labels, then runs the
inner model. `keras.ops` only: the same code on TensorFlow, JAX and torch.
"""

import numbers

import keras
from keras import ops

# The modes of the batch's "mix" row (as `pipeline.draw_mix` draws them).
CUTMIX, MIXUP = 1, 2


def _channel_values(name, values, positive=False):
    """`values` (a sequence or array of numbers) as a list of floats."""
    items = list(values) if hasattr(values, "__len__") and not isinstance(values, str) else []
    if (
        not items
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items)
        or (positive and not all(v > 0 for v in items))
    ):
        condition = " > 0" if positive else ""
        raise ValueError(f"Invalid `{name}`: {values!r}. Expected a list of numbers{condition}, one per channel.")
    return [float(v) for v in items]


def _box_mask(height, width, top, bottom, left, right):
    """`(B, H, W)` bool: rows `top:bottom` and columns `left:right` of each
    image (each bound `(B,)` int32)."""
    rows = ops.arange(height, dtype="int32")[None, :, None]
    cols = ops.arange(width, dtype="int32")[None, None, :]
    inside_rows = ops.logical_and(ops.greater_equal(rows, top[:, None, None]), ops.less(rows, bottom[:, None, None]))
    inside_cols = ops.logical_and(ops.greater_equal(cols, left[:, None, None]), ops.less(cols, right[:, None, None]))
    return ops.logical_and(inside_rows, inside_cols)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class DeviceBatchAugmentation(keras.Model):
    """Normalisation, random erasing and CutMix/Mixup of a batch inside the
    train step, then `model`.

    Input `x`: a dict (see `keras_smallvit.training.train_dataset` with
    `batch_augmentation="device"`) of `"images"` uint8 `(B, H, W, C)` and,
    for training batches, `"erase"` int32 `(B, 5)` (`[apply, top, left,
    height, width]` per image), `"mix"` int32 `(B, 5)` (`[mode, top,
    bottom, left, right]`, mode 0 none, 1 CutMix, 2 Mixup), `"lam"` float32
    `(B,)` and `"permutation"` int32 `(B,)`. Evaluation batches are
    `{"images"}` alone: normalised, not erased or mixed.

    `augment(x)` gives the images `model` sees, `mix_labels(x, y)` the
    labels the loss and metrics see (`lam * y + (1 - lam) * y[permutation]`),
    both as the host pipeline computes them. The augmentation runs in
    float32 under mixed precision (the wrapper does not cast its inputs;
    `model` casts the images to its compute dtype). The wrapper has the
    inner model's dtype policy, so `compile` adds loss scaling under
    `mixed_float16` as it would for `model`.

    Save or export `model` itself (it holds every weight; the wrapper adds
    none): the run saves the inner classifier, whose export carries the
    normalisation.

    Args:
        model: the classifier (a `keras.Model` on normalised float images).
        mean: per-channel mean the images are normalised with (`[0, 1]` units).
        std: per-channel std (> 0).
        fill: per-channel value random erasing writes (normalised units).
        name: the wrapper's name.
    """

    def __init__(self, model, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), fill=(0.0, 0.0, 0.0),
                 name="device_batch_augmentation", **kwargs):
        if not isinstance(model, keras.Model):
            raise ValueError(f"Invalid `model`: {model!r}. Expected a keras.Model (the classifier).")
        # The inner model's policy (loss scaling in `compile` under float16);
        # no input casting: the augmentation computes in float32.
        super().__init__(name=name, dtype=model.dtype_policy, autocast=False, **kwargs)
        self.mean = _channel_values("mean", mean)
        self.std = _channel_values("std", std, positive=True)
        self.fill = _channel_values("fill", fill)
        if not len(self.mean) == len(self.std) == len(self.fill):
            raise ValueError(
                f"Invalid `mean`/`std`/`fill`: {len(self.mean)}, {len(self.std)} and {len(self.fill)} "
                "values. Expected one per channel, the same number each."
            )
        self.model = model
        self.built = True

    # --- augmentation -------------------------------------------------------------

    def _check_batch(self, x):
        if not isinstance(x, dict) or "images" not in x:
            raise ValueError(
                f"Invalid input to {self.name}: {type(x).__name__}. Expected a dict with 'images' (uint8) "
                "and, for training, 'erase', 'mix', 'lam', 'permutation' "
                "(`train_dataset(..., batch_augmentation='device')`)."
            )

    def augment(self, x):
        """The float32 images the inner model sees: `x["images"] / 255`,
        normalised, erased (`x["erase"]`), mixed (`x["mix"]`, `x["lam"]`,
        `x["permutation"]`); the steps whose keys `x` lacks are left out."""
        self._check_batch(x)
        images = ops.cast(x["images"], "float32") / 255.0
        images = (images - ops.convert_to_tensor(self.mean, "float32")) / ops.convert_to_tensor(self.std, "float32")
        height, width = images.shape[1], images.shape[2]
        if "erase" in x:
            erase = ops.cast(x["erase"], "int32")
            top, left = erase[:, 1], erase[:, 2]
            inside = _box_mask(height, width, top, top + erase[:, 3], left, left + erase[:, 4])
            inside = ops.logical_and(inside, ops.greater(erase[:, 0], 0)[:, None, None])
            images = ops.where(inside[..., None], ops.convert_to_tensor(self.fill, "float32"), images)
        if "mix" in x:
            mix = ops.cast(x["mix"], "int32")
            partner = ops.take(images, ops.cast(x["permutation"], "int32"), axis=0)
            pasted = ops.logical_and(_box_mask(height, width, *(mix[:, i] for i in range(1, 5))),
                                     ops.equal(mix[:, 0], CUTMIX)[:, None, None])
            lam = ops.cast(x["lam"], "float32")[:, None, None, None]
            blended = lam * images + (1.0 - lam) * partner
            images = ops.where(ops.equal(mix[:, 0], MIXUP)[:, None, None, None], blended,
                               ops.where(pasted[..., None], partner, images))
        return images

    def mix_labels(self, x, y):
        """`y` mixed as the images are: `lam * y + (1 - lam) * y[permutation]`
        (unchanged where `x` carries no mixing)."""
        self._check_batch(x)
        if "permutation" not in x:
            return y
        y, lam = ops.cast(y, "float32"), ops.cast(x["lam"], "float32")[:, None]
        return lam * y + (1.0 - lam) * ops.take(y, ops.cast(x["permutation"], "int32"), axis=0)

    # --- model ------------------------------------------------------------------------

    def call(self, x, training=None):
        return self.model(self.augment(x), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(
            x=x, y=self.mix_labels(x, y), y_pred=y_pred, sample_weight=sample_weight, training=training
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # The host pipeline feeds mixed labels: its metrics are on them too.
        return super().compute_metrics(x, self.mix_labels(x, y), y_pred, sample_weight)

    # --- serialization ----------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.model),
            "mean": self.mean,
            "std": self.std,
            "fill": self.fill,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)
