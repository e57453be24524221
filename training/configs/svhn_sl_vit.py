"""sl_vit on svhn_cropped with the papers' recipe (100 epochs x 3 repeated passes, batch 128)."""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="sl_vit",
        dataset="svhn_cropped",
        workdir="runs/svhn_sl_vit",
    )
