"""SL-ViT-Tiny (DeiT-Ti with SPT and LSA) on ImageNet with the SPT/LSA
paper's ImageNet recipe (Table 3: 100 epochs, batch 256, lr 2.5e-4, 5
warm-up epochs; see `_imagenet.py`). The paper's other rows: `--set
model=swin_t` (SL-Swin-T) or `--set techniques=none` for the baselines."""

from training.configs._imagenet import spt_lsa_imagenet_recipe


def get_config():
    return spt_lsa_imagenet_recipe(data_dir="data/tensorflow_datasets", workdir="runs/imagenet_sl_deit_ti")
