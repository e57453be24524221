"""AAL paper (adaptive attention link-based regularization), Table 6, the
weak-augmentation columns: CE, CE + AAL, CE + DeiT soft / hard distillation
and CE + AAL + hard distillation on CIFAR-10, a teacher trained on CIFAR-10.

Weak augmentation is the paper's "only random crops and horizontal flips":
no AutoAugment, Mixup/CutMix or random erasing (the rest of the recipe, label
smoothing included, as `cifar10_sl_vit`). The student is the package's
small-image ViT (the paper's DeiT-S, distilled version, at 224 px: its
distillation token is not used here, see `keras_smallvit.aal.LogitDistiller`).
The teacher is a ResNet-56 trained first on the same data with the same
recipe, one per row that needs it, into `<run>/teacher` (to share one:
`--set aal_teacher=PATH/last.keras` for the rows with a teacher). Links
alpha (the paper's choice on small data sets); lambda 2000 decaying as the
paper; distillation alpha 0.5, tau 1.0 (DeiT's code).
"""

from training.tables import Row
from training.tables import Table

PAPER = "AAL paper (attention-link regularization, seed 003), Table 6, weak data augmentation"
TEACHER = ("aal_teacher_model=resnet56",)
AAL = ("aal=true", "aal_links=alpha")

TABLE = Table(
    name="aal_table6",
    title="AAL Table 6 (weak augmentation): CE, + AAL, + DeiT soft / hard distillation, + AAL + hard (ViT, CIFAR-10)",
    source=f"{PAPER} (top-1 %)",
    datasets=("cifar10",),
    rows=(
        Row("CE", "vit", paper={"cifar10": 84.2}),
        Row("CE + AAL", "vit", settings=TEACHER + AAL, paper={"cifar10": 92.5}),
        Row("CE + Soft Distillation", "vit", settings=TEACHER + ("distillation=soft",), paper={"cifar10": 84.0}),
        Row("CE + Hard Distillation", "vit", settings=TEACHER + ("distillation=hard",), paper={"cifar10": 85.1}),
        Row("CE + AAL + Hard Dist.", "vit", settings=TEACHER + AAL + ("distillation=hard",), paper={"cifar10": 94.1}),
    ),
    # Weak augmentation: random crop (padding 4) and horizontal flip only.
    settings=(
        "augmentation=none",
        "mix_prob=0",
        "random_erasing=0",
        "crop_padding=4",
        "horizontal_flip=true",
        "lr=none",
    ),
    notes="Weak augmentation = crop + flip. Each teacher row trains its ResNet-56 teacher first (same data, recipe "
          "and seed); --set aal_teacher=PATH shares one. Student: ViT at 32 px (the paper: DeiT-S at 224 px).",
)
