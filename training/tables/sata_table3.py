"""SATA paper (Chen et al. 2023), Table 3: suppression with s from the grid
search, s = 0 (trivial attention removed), learnable s, and none; ViT on
Tiny-ImageNet."""

from training.tables import Row
from training.tables import Table
from training.tables._sata import PAPER
from training.tables._sata import SATA_CONFIGS
from training.tables._sata import fixed_scale

TABLE = Table(
    name="sata_table3",
    title="SATA Table 3: fixed, zero, learnable and no suppression scale (ViT, Tiny-ImageNet)",
    source=f"{PAPER}, Table 3 (top-1 %)",
    datasets=("tiny_imagenet",),
    rows=(
        Row("no suppression", "vit", paper={"tiny_imagenet": 56.45}),
        fixed_scale("s = 0, t = 0.075", 0.0, 0.075, {"tiny_imagenet": 57.47}),
        fixed_scale("s = 0.75, t = 0.1 (grid)", 0.75, 0.1, {"tiny_imagenet": 57.69}),
        Row("learnable s, t = 0.1", "sata_vit", paper={"tiny_imagenet": 58.77}, configs=SATA_CONFIGS),
    ),
)
