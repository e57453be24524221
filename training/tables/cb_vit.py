"""Context broadcasting (Heo et al. 2022) on the SPT/LSA recipe: ViT and
CB-ViT on the four small datasets. The seed paper has the abstract only:
no published values, ours alone."""

from training.tables import Row
from training.tables import Table

TABLE = Table(
    name="cb_vit",
    title="CB: ViT with uniform context broadcasting on small datasets (no published values)",
    source="Heo et al. 2022, Scratching Visual Transformer's Back with Uniform Attention (abstract only)",
    datasets=("cifar10", "cifar100", "svhn_cropped", "tiny_imagenet"),
    rows=(
        Row("ViT", "vit"),
        Row("CB-ViT", "cb_vit"),
    ),
)
