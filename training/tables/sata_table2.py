"""SATA paper (Chen et al. 2023), Table 2: ViT and PiT with and without
SATA on CIFAR-100 and Tiny-ImageNet (100 epochs, the SPT/LSA recipe; s
learnable from 0.5 with its own learning rate, t = 0.1, 0.05 for PiT on
CIFAR-100: the registry's `sata_*` variants and `sata_lr` of Table 1)."""

from training.tables import Row
from training.tables import Table
from training.tables._sata import PAPER

TABLE = Table(
    name="sata_table2",
    title="SATA Table 2: suppressing accumulated trivial attention on ViT and PiT",
    source=f"{PAPER}, Table 2 (top-1 %)",
    datasets=("cifar100", "tiny_imagenet"),
    rows=(
        Row("ViT", "vit", paper={"cifar100": 73.70, "tiny_imagenet": 56.45}),
        Row("SATA-ViT", "sata_vit", paper={"cifar100": 74.93, "tiny_imagenet": 58.77},
            configs={"cifar100": "cifar100_sata_vit", "tiny_imagenet": "tiny_imagenet_sata_vit"}),
        Row("PiT", "pit", paper={"cifar100": 72.31, "tiny_imagenet": 57.87}),
        Row("SATA-PiT", "sata_pit", paper={"cifar100": 73.52, "tiny_imagenet": 58.15},
            configs={"cifar100": "cifar100_sata_pit", "tiny_imagenet": "tiny_imagenet_sata_pit"}),
    ),
)
