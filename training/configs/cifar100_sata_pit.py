"""sata_pit on cifar100 with the papers' recipe (100 epochs x 3 repeated passes, batch 128)."""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="sata_pit",
        dataset="cifar100",
        sata_lr=1e-3,  # SATA paper Table 1
        sata_threshold=0.05,  # SATA paper: the exception for PiT on CIFAR-100
        workdir="runs/cifar100_sata_pit",
    )
