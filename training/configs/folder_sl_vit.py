"""SL-ViT on your own images: the config `--dataset folder:PATH` uses when
no `--config` is given.

    python -m training.train --dataset folder:path/to/images   # train/<class>/, val/ and/or test/<class>/
    python -m training.train --dataset folder:photos --validation-split 0.2   # photos/<class>/

The papers' recipe (AutoAugment with the CIFAR-10 policy, crop + horizontal
flip, CutMix/Mixup on half the batches, random erasing, label smoothing,
stochastic depth, AdamW with warm-up + cosine) with what small data changes:
batch 64 instead of 128, so that a few thousand images still make enough
steps per epoch, and normalisation with the folder's own statistics
(computed from its training split), warm-up over a tenth of the epochs.
The image size is measured from the images unless `--image-size` is given
(the median side, capped at 64: `pipeline.automatic_image_size`); the run folder is
`runs/folder_<folder name>` unless `--workdir` is given. Digits, text and
other images that a mirror changes want `--set horizontal_flip=false`.
"""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="sl_vit",
        dataset="folder:",  # the path comes from --dataset
        epochs=100,
        batch_size=64,
        horizontal_flip=True,
        workdir="runs/folder",
    )
