"""sl_t2t on cifar100 with the papers' recipe (100 epochs x 3 repeated passes, batch 128)."""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="sl_t2t",
        dataset="cifar100",
        workdir="runs/cifar100_sl_t2t",
    )
