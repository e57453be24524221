"""A table that runs on any laptop in minutes: ViT, SL-ViT and SL-ViT with
SATA and CB on scikit-learn's offline digits (the `digits_sl_vit` budget:
10 epochs). No published values: it shows the tool end to end."""

from training.tables import Row
from training.tables import Table

TABLE = Table(
    name="digits_demo",
    title="Digits demo: ViT, SL-ViT, SL-ViT + SATA + CB on scikit-learn's digits (offline)",
    source="none (a demonstration of python -m training.reproduce)",
    datasets=("digits",),
    rows=(
        Row("ViT", "vit"),
        Row("SL-ViT", "sl_vit"),
        Row("SL-SATA-CB-ViT", "sl_sata_cb_vit"),
    ),
    # The digits budget (10 epochs, lr 1e-3 for every row): the papers' rates
    # (3e-3 for ViT) are for their 100-epoch recipe.
    base_configs={"digits": "digits_sl_vit"},
)
