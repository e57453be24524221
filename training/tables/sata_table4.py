"""SATA paper (Chen et al. 2023), Table 4: grid search over a fixed s and t
for ViT on Tiny-ImageNet (31 rows: 5 thresholds x 6 scales and the baseline)."""

from training.tables._sata import grid_table

TABLE = grid_table(4, "tiny_imagenet", "Tiny-ImageNet", {
    0.1: (56.43, 57.69, 56.22, 57.30, 56.46, 56.51),
    0.075: (56.79, 57.06, 56.74, 56.29, 56.99, 57.47),
    0.05: (56.11, 56.72, 56.47, 56.87, 57.24, 56.47),
    0.025: (56.06, 56.85, 56.71, 56.65, 56.95, 56.31),
    0.01: (57.23, 56.31, 56.63, 56.45, 56.44, 56.55),
    0: (56.45,),
})
