"""sl_pit on tiny_imagenet with the papers' recipe (100 epochs x 3 repeated passes, batch 128)."""

from keras_smallvit.training import TrainConfig


def get_config():
    return TrainConfig(
        model="sl_pit",
        dataset="tiny_imagenet",
        data_dir="data/tiny-imagenet-200",  # the unpacked official archive
        workdir="runs/tiny_imagenet_sl_pit",
    )
