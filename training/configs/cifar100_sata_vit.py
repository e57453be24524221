"""sata_vit on cifar100 with the papers' recipe (100 epochs x 3 repeated passes, batch 128)."""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="sata_vit",
        dataset="cifar100",
        sata_lr=7e-5,  # SATA paper Table 1
        workdir="runs/cifar100_sata_vit",
    )
