"""AAL paper Table 2, the 5 % row: DeiT-S (distilled) trained on a
class-balanced 5 % of ImageNet with attention links to an ImageNet
EfficientNet-B3 teacher and hard distillation, DeiT's recipe otherwise
(see `_imagenet.py`). The teacher: a `.keras` file of an ImageNet-trained
EfficientNet-B3 (`--set aal_teacher=PATH`)."""

from training.configs._imagenet import AAL_DECAY
from training.configs._imagenet import deit_recipe


def get_config():
    return deit_recipe(
        model="deit_s_distilled",
        data_dir="data/tensorflow_datasets",
        subset_ratio=0.05,
        subset_seed=0,
        aal=True,
        aal_teacher="teachers/efficientnet_b3_imagenet.keras",  # replace with yours: --set aal_teacher=...
        aal_lambda=2000.0,
        aal_decay=AAL_DECAY,
        distillation="hard",
        workdir="runs/imagenet5_aal_deit_s",
    )
