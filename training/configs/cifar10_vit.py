"""vit on cifar10 with the papers' recipe (100 epochs x 3 repeated passes, batch 128)."""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="vit",
        dataset="cifar10",
        workdir="runs/cifar10_vit",
    )
