"""SATA paper (Chen et al. 2023), Table 6: softmax temperature tau = k /
sqrt(D_h), k = 1..4, with and without SATA; ViT on Tiny-ImageNet. (The
paper adjusts s's learning rate after adding tau and reports the best; the
rows here keep Table 1's, `sata_lr` 1e-3: `--set sata_lr=...` to search.)"""

from training.tables import Row
from training.tables import Table
from training.tables._sata import PAPER
from training.tables._sata import SATA_CONFIGS

TABLE = Table(
    name="sata_table6",
    title="SATA Table 6: softmax temperature multiples with and without SATA (ViT, Tiny-ImageNet)",
    source=f"{PAPER}, Table 6 (top-1 %)",
    datasets=("tiny_imagenet",),
    rows=tuple(
        Row(f"ViT + tau x{k}", "vit", settings=(f"model.temperature_multiple={k}",),
            paper={"tiny_imagenet": without})
        for k, without in zip((1, 2, 3, 4), (56.45, 57.20, 57.21, 57.81))
    ) + tuple(
        Row(f"ViT + tau x{k} + SATA", "sata_vit", settings=(f"model.temperature_multiple={k}",),
            paper={"tiny_imagenet": with_sata}, configs=SATA_CONFIGS)
        for k, with_sata in zip((1, 2, 3, 4), (58.77, 58.12, 57.72, 57.58))
    ),
)
