"""SATA paper (Chen et al. 2023), Table 5: grid search over a fixed s and t
for ViT on CIFAR-100 (31 rows: 5 thresholds x 6 scales and the baseline)."""

from training.tables._sata import grid_table

TABLE = grid_table(5, "cifar100", "CIFAR-100", {
    0.1: (74.61, 74.51, 74.46, 74.07, 74.42, 74.50),
    0.075: (74.81, 74.01, 73.89, 74.65, 73.97, 74.75),
    0.05: (74.71, 74.18, 74.82, 74.46, 74.32, 74.96),
    0.025: (74.34, 73.39, 73.93, 74.34, 74.21, 73.86),
    0.01: (74.15, 74.75, 74.60, 74.15, 74.49, 73.71),
    0: (73.70,),
})
