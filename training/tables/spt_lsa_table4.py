"""SPT/LSA paper (Lee, Lee & Song 2021), Table 4: the two elements of LSA
alone and together on ViT: learned temperature only (T-ViT), diagonal mask
only (M-ViT), both (L-ViT)."""

from training.tables import Row
from training.tables import Table
from training.tables.spt_lsa_table2 import PAPER

TABLE = Table(
    name="spt_lsa_table4",
    title="SPT/LSA Table 4: the elements of LSA (learned temperature, diagonal mask) on ViT",
    source=f"{PAPER}, Table 4 (top-1 %)",
    datasets=("cifar100", "tiny_imagenet"),
    rows=(
        Row("ViT", "vit", paper={"cifar100": 73.81, "tiny_imagenet": 57.07}),
        Row("T-ViT", "t_vit", paper={"cifar100": 74.35, "tiny_imagenet": 57.95}),
        Row("M-ViT", "m_vit", paper={"cifar100": 74.34, "tiny_imagenet": 58.29}),
        Row("L-ViT", "l_vit", paper={"cifar100": 74.87, "tiny_imagenet": 58.50}),
    ),
)
