"""resnet56 on cifar100 with the papers' recipe (100 epochs x 3 repeated passes, batch 128, lr 3e-3 as in the SPT/LSA paper)."""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="resnet56",
        dataset="cifar100",
        workdir="runs/cifar100_resnet56",
    )
