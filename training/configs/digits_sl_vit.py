"""SL-ViT + SATA + CB on scikit-learn's digits: the offline main job (CPU, minutes).

1,797 real 8x8 digits upsampled to 32 px (1,437 train / 360 test). The
papers' recipe (AutoAugment with the CIFAR-10 policy, normalisation with
the digits' own statistics) with a budget a laptop can afford: 10 epochs,
no horizontal flip (digits are not mirror-symmetric), no batch mixing or
erasing (they need more epochs than this budget to pay off).
"""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="sl_sata_cb_vit",
        dataset="digits",
        epochs=10,
        repeated_augmentation=1,
        batch_size=64,
        lr=1e-3,
        horizontal_flip=False,
        mix_prob=0.0,
        random_erasing=0.0,
        workdir="runs/digits_sl_vit",
    )
