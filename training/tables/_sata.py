"""What the SATA paper's tables share: its recipe per dataset and its rows."""

from training.tables import Row
from training.tables import Table

PAPER = "Chen et al. 2023, Accumulated Trivial Attention Matters in Vision Transformers on Small Datasets"

# SATA paper Table 1: s's own learning rate per dataset (ViT), in the configs.
SATA_CONFIGS = {"cifar100": "cifar100_sata_vit", "tiny_imagenet": "tiny_imagenet_sata_vit"}


def fixed_scale(name, scale, threshold, paper):
    """A row of SATA-ViT with s fixed (not learned) at `scale`, threshold `threshold`."""
    suppression = {"threshold": threshold, "initial_scale": scale, "trainable_scale": False}
    return Row(name, "sata_vit", settings=(f"model.suppression={suppression!r}",), paper=paper,
               configs=SATA_CONFIGS)


def grid_table(number, dataset, dataset_title, published):
    """Tables 4-5 as a `Table`: s x t with s fixed, plus the baseline without
    suppression (the t = 0 row). `published[t]` lists top-1 for s in `SCALES`."""
    return Table(
        name=f"sata_table{number}",
        title=f"SATA Table {number}: fixed s x t grid, ViT on {dataset_title}",
        source=f"{PAPER}, Table {number} (top-1 %)",
        datasets=(dataset,),
        rows=grid(dataset, published),
    )


def grid(dataset, published):
    """The rows of `grid_table`."""
    rows = [Row("ViT (no suppression)", "vit", paper={dataset: published[0][0]})]
    for threshold in THRESHOLDS[:-1]:
        for scale, value in zip(SCALES, published[threshold]):
            rows.append(fixed_scale(f"s={scale} t={threshold}", scale, threshold, {dataset: value}))
    return tuple(rows)


SCALES = (1, 0.75, 0.5, 0.25, 0.1, 0)
THRESHOLDS = (0.1, 0.075, 0.05, 0.025, 0.01, 0)
