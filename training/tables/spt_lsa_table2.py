"""SPT/LSA paper (Lee, Lee & Song 2021), Table 2: top-1 of CNNs and ViTs
with and without SPT + LSA on the four small datasets (100 epochs, the
papers' recipe). Throughput, MFLOPs and parameters are measured here
(`python -m training.reproduce spt_lsa_table2 --dry-run` measures them)."""

from training.tables import Row
from training.tables import Table

PAPER = "Lee, Lee & Song 2021, Vision Transformer for Small-Size Datasets"
DATASETS = ("cifar10", "cifar100", "svhn_cropped", "tiny_imagenet")


def published(*values):
    return dict(zip(DATASETS, values))


TABLE = Table(
    name="spt_lsa_table2",
    title="SPT/LSA Table 2: ViTs with and without SPT and LSA on small datasets",
    source=f"{PAPER}, Table 2 (top-1 %)",
    datasets=DATASETS,
    rows=(
        Row("ResNet 56", "resnet56", paper=published(95.70, 76.36, 97.73, 58.77)),
        Row("ResNet 110", "resnet110", paper=published(96.37, 79.86, 97.85, 62.96)),
        Row("EfficientNet B0", "efficientnet_b0", paper=published(94.66, 76.04, 97.22, 66.79)),
        Row("ViT", "vit", paper=published(93.58, 73.81, 97.82, 57.07)),
        Row("SL-ViT", "sl_vit", paper=published(94.53, 76.92, 97.79, 61.07)),
        Row("T2T", "t2t", paper=published(95.30, 77.00, 97.90, 60.57)),
        Row("SL-T2T", "sl_t2t", paper=published(95.57, 77.36, 97.91, 61.83)),
        Row("CaiT", "cait", paper=published(94.91, 76.89, 98.13, 64.37)),
        Row("SL-CaiT", "sl_cait", paper=published(95.81, 80.32, 98.28, 67.18)),
        Row("PiT", "pit", paper=published(94.24, 74.99, 97.83, 60.25)),
        Row("SL-PiT w/o S_pool", "sl_pit_no_spool", paper=published(94.96, 77.08, 97.94, 60.31)),
        Row("SL-PiT w/ S_pool", "sl_pit", paper=published(95.88, 79.00, 97.93, 62.91)),
        Row("Swin", "swin", paper=published(94.46, 76.87, 97.72, 60.87)),
        Row("SL-Swin w/o S_pool", "sl_swin_no_spool", paper=published(95.30, 78.13, 97.88, 62.70)),
        Row("SL-Swin w/ S_pool", "sl_swin", paper=published(95.93, 79.99, 97.92, 64.95)),
    ),
)

# The paper's own measurements (Tiny-ImageNet, batch 128, RTX 2080 Ti): img/s, MFLOPs, params (M).
PAPER_COSTS = {
    "ResNet 56": (4295, 506.2, 0.9), "ResNet 110": (2143, 1020.0, 1.7), "EfficientNet B0": (4078, 123.9, 3.7),
    "ViT": (8593, 189.8, 2.8), "SL-ViT": (7697, 199.2, 2.9), "T2T": (3388, 643.0, 6.7),
    "SL-T2T": (2943, 671.4, 7.1), "CaiT": (3138, 613.8, 9.1), "SL-CaiT": (2967, 623.3, 9.2),
    "PiT": (7583, 279.2, 7.1), "SL-PiT w/o S_pool": (6632, 280.4, 7.1), "SL-PiT w/ S_pool": (5981, 322.9, 8.7),
    "Swin": (6804, 242.3, 7.1), "SL-Swin w/o S_pool": (6384, 247.0, 7.1), "SL-Swin w/ S_pool": (5711, 284.9, 10.2),
}
