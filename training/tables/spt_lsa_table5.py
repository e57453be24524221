"""SPT/LSA paper (Lee, Lee & Song 2021), Table 5: SPT (S) and LSA (L) alone
and together on ViT."""

from training.tables import Row
from training.tables import Table
from training.tables.spt_lsa_table2 import PAPER

TABLE = Table(
    name="spt_lsa_table5",
    title="SPT/LSA Table 5: SPT and LSA alone and together on ViT",
    source=f"{PAPER}, Table 5 (top-1 %)",
    datasets=("cifar100", "tiny_imagenet"),
    rows=(
        Row("ViT", "vit", paper={"cifar100": 73.81, "tiny_imagenet": 57.07}),
        Row("L-ViT", "l_vit", paper={"cifar100": 74.87, "tiny_imagenet": 58.50}),
        Row("S-ViT", "s_vit", paper={"cifar100": 76.29, "tiny_imagenet": 60.67}),
        Row("SL-ViT", "sl_vit", paper={"cifar100": 76.92, "tiny_imagenet": 61.07}),
    ),
)
