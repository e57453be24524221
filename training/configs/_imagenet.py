"""The ImageNet recipes as code, shared by the `imagenet_*` configs (a
module whose name starts with `_` is not a config itself).

DeiT's recipe (Touvron et al. 2021, its Table 9 and `main.py` defaults):
300 epochs, batch 1024, AdamW with lr 5e-4 x batch / 512 and weight decay
0.05, 5 warm-up epochs from 1e-6, cosine to 1e-5, label smoothing 0.1,
stochastic depth 0.1, RandAugment `rand-m9-mstd0.5-inc1`, Mixup 0.8 and
CutMix 1.0 on every batch (one of the two, equal chance), random erasing
0.25, repeated augmentation 3, random resized crop and flip at 224 px.

Repeated augmentation: DeiT's sampler keeps an epoch at one dataset length
of samples (a third of the images, each 3 times); here an epoch is
`repeated_augmentation` passes over all images. So DeiT's 300 epochs are
100 epochs here of 3 passes each: the same 300 dataset lengths of samples,
and every per-epoch number is converted (warm-up 5 -> 2 epochs, i.e. 6
DeiT epochs; AAL's lambda decay 0.99 per DeiT epoch -> 0.99^3 per epoch).

Differences from DeiT that remain (see docs/reproducing.md): the images are
stored once at 224 px (`resize="crop"`: the centred square), so the random
resized crop cuts from that square, not from the full-resolution photo, and
evaluation reads the centred square (DeiT: resize to 256, centre crop 224);
RandAugment runs on the 14 AutoAugment ops with their ranges (timm's
`inc1` op set differs); random erasing fills with the mean, not with
per-pixel noise; the copies of an image fall anywhere in the epoch, not in
the same step on different devices.

The SPT/LSA paper's ImageNet recipe (Lee et al. 2021, Sec. 4.1.3 and its
Table 3): DeiT-Ti ("ViT-Tiny"), PiT-XS and Swin-T at their papers' patch
sizes, 100 epochs, batch 256, AdamW lr 2.5e-4 for every model, weight decay
0.05, 5 warm-up epochs, cosine decay, AutoAugment, repeated augmentation,
CutMix, Mixup, label smoothing, stochastic depth, random erasing: the
small-dataset recipe of this package otherwise (its numbers), with the
random resized crop in place of the padded crop at 224 px.
"""

import dataclasses

from keras_smallvit.training import TrainConfig

DEIT_BATCH_SIZE = 1024
DEIT_EPOCHS = 300
REPEATS = 3


def deit_lr(batch_size):
    """DeiT's linear scaling rule: 5e-4 x batch / 512."""
    return 5e-4 * batch_size / 512


def deit_recipe(**changes):
    """DeiT's ImageNet recipe (see the module docstring) as a `TrainConfig`;
    `changes` replace fields (the learning rate follows a new `batch_size`
    unless `lr` is given)."""
    batch_size = changes.get("batch_size", DEIT_BATCH_SIZE)
    config = TrainConfig(
        model="deit_s",
        dataset="imagenet2012",
        image_size=224,
        resize="crop",
        epochs=DEIT_EPOCHS // REPEATS,
        repeated_augmentation=REPEATS,
        warmup_epochs=2,  # DeiT's 5 of 300 epochs, rounded up to whole epochs of 3 passes
        batch_size=batch_size,
        lr=deit_lr(batch_size),
        warmup_start_lr=1e-6,
        min_lr=1e-5,
        weight_decay=0.05,
        label_smoothing=0.1,
        drop_path_rate=0.1,
        crop_padding=0,
        random_resized_crop=(0.08, 1.0),
        horizontal_flip=True,
        augmentation="randaugment",
        randaugment_ops=2,
        randaugment_factor=0.9,  # m9 on timm's 0-10 scale
        randaugment_magnitude_std=0.05,  # mstd0.5 on that scale
        mix_prob=1.0,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        random_erasing=0.25,
        workdir="runs/imagenet_deit_s",
    )
    return dataclasses.replace(config, **changes)


def spt_lsa_imagenet_recipe(**changes):
    """The SPT/LSA paper's ImageNet recipe (see the module docstring) as a
    `TrainConfig`; `changes` replace fields."""
    config = TrainConfig(
        model="deit_ti",
        techniques=("spt", "lsa"),
        dataset="imagenet2012",
        image_size=224,
        resize="crop",
        epochs=100,
        warmup_epochs=5,
        batch_size=256,
        lr=2.5e-4,
        crop_padding=0,
        random_resized_crop=(0.08, 1.0),
        augmentation="autoaugment",
        autoaugment_policy="imagenet",
        workdir="runs/imagenet_sl_deit_ti",
    )
    return dataclasses.replace(config, **changes)


# AAL (Table 2, "If not mentioned otherwise"): DeiT-S distilled with an
# EfficientNet-B3 teacher, lambda 2000 decayed by 0.99 per DeiT epoch for
# the first 200 epochs and 0.98 for the last 100, DeiT's recipe otherwise.
AAL_DECAY = f"{0.99 ** REPEATS:.6f}@0.6667,{0.98 ** REPEATS:.6f}"
