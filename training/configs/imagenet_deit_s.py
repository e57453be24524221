"""DeiT-S on ImageNet with DeiT's recipe (300 DeiT epochs = 100 epochs x 3
repeated passes, batch 1024, lr 5e-4 x batch / 512; see `_imagenet.py`).
Other DeiT sizes: `--set model=deit_ti` or `deit_b` (DeiT-B: drop_path_rate
0.1 as well)."""

from training.configs._imagenet import deit_recipe


def get_config():
    return deit_recipe(model="deit_s", data_dir="data/tensorflow_datasets", workdir="runs/imagenet_deit_s")
