"""SATA paper (Chen et al. 2023), Table 7: SATA on top of LSA (ViT)."""

from training.tables import Row
from training.tables import Table
from training.tables._sata import PAPER
from training.tables._sata import SATA_CONFIGS

TABLE = Table(
    name="sata_table7",
    title="SATA Table 7: LSA and LSA + SATA on ViT",
    source=f"{PAPER}, Table 7 (top-1 %)",
    datasets=("cifar100", "tiny_imagenet"),
    rows=(
        Row("ViT", "vit", paper={"cifar100": 73.70, "tiny_imagenet": 56.45}),
        Row("ViT + LSA", "l_vit", paper={"cifar100": 75.40, "tiny_imagenet": 57.82}),
        Row("ViT + LSA + SATA", "vit", settings=("techniques=lsa,sata",),
            paper={"cifar100": 75.47, "tiny_imagenet": 58.28}, configs=SATA_CONFIGS),
    ),
)
