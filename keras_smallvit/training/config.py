"""The training configuration: one dataclass, the papers' recipe as defaults.

Configs are code (big_vision style): `training/configs/<name>.py` returns a
`TrainConfig`; the command line overrides fields with `--set key=value`.
"""

import ast
import dataclasses
import functools
import json
import math
import numbers
import os
import re
import sys
import typing
from typing import Optional
from typing import Tuple

from keras_smallvit.images import RESIZE_POLICIES
from keras_smallvit.models.preset_table import IMAGENET_MODELS
from keras_smallvit.models.preset_table import NO_IMAGENET_WEIGHTS
from keras_smallvit.models.preset_table import PRESET_FACTS
from keras_smallvit.models.preset_table import PRESET_ROWS
from keras_smallvit.models.preset_table import check_model_settings
from keras_smallvit.utils import legacy
from keras_smallvit.utils.aal_settings import check_aal_settings
from keras_smallvit.utils.distillation import check_distillation_settings
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
AUGMENTATIONS = ("autoaugment", "randaugment", "none")
AUTOAUGMENT_POLICIES = ("cifar10", "svhn", "imagenet")
JIT_CHOICES = ("auto", True, False)
BATCH_AUGMENTATIONS = ("host", "device")
DATA_MODES = ("auto", "memory", "stream")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on. Defaults are the papers' recipe.

    Model:
        model: a name from `keras_smallvit.list_models()`.
        techniques: replaces the variant's techniques (subset of spt, lsa,
            sata, cb, diagonal_mask, learnable_temperature); None keeps the
            variant's.
        model_overrides: extra `create_model` arguments (e.g. `{"depth": 6}`).
        drop_path_rate: stochastic depth rate (0.1).
        sata_lr: SATA's own learning rate for `s` (paper Table 1: ViT 7e-5 on
            CIFAR-100, 1e-3 on Tiny-ImageNet), with the model's warm-up +
            cosine shape and weight decay at `sata_lr * weight_decay`, as the
            official second optimizer; None = the model's rate.
        sata_threshold: SATA's `t`; None keeps the variant's default (0.1).

    Data:
        dataset: see `keras_smallvit.data.DATASET_NAMES`.
        data_dir: TFDS data dir / the unpacked Tiny-ImageNet folder.
        image_size: None = the dataset's default (32, or 64 for Tiny-ImageNet).
        resize ("squash"): how images of another size or shape become
            `image_size`: "squash" (the whole image, aspect ratio not kept),
            "crop" (the centred box of the model's aspect ratio) or "pad"
            (padded with black to it), each then resized bilinearly with
            antialiasing (`keras_smallvit.images.RESIZE_POLICIES`). The
            run records it with the model: evaluation, prediction and the
            export resize the same way. Cannot change on resume.
        subset_ratio: None (every training image), or the share in (0, 1]
            of the training split to train on, class-balanced (`round(ratio
            x n_c)` images of each class, at least one), drawn by
            `keras_smallvit.data.class_balanced_subset` seeded by
            `(subset_seed, class)`: the same subset on every backend, for
            any `seed`, and on resume (the run records both; a resume with
            another value is refused). The AAL paper's ImageNet subsets
            (`subset_ratio=0.05` for its 5 % row). Taken before
            `validation_split` and `max_train_examples`; the test split is
            whole.
        subset_seed (0): seeds that subset; independent of `seed`.
        max_train_examples / max_test_examples: truncate the splits (smoke
            runs; image files are taken evenly over the sorted list, so
            every class of a folder stays in).
        validation_split: None, or the fraction of each class held out of
            the training images for validation (stratified, in (0, 1)):
            the validation split then picks `best.keras`, and the test
            split (where the data has one) is evaluated at the end. Needed
            for one folder of class folders (`folder:PATH` without
            train/); not with a folder that has val/.
        validation_split_seed (0): seeds that hold-out; independent of
            `seed`, so runs of several seeds share one validation set.
        skip_unreadable_images (False): image files that do not decode
            are an error naming them all (before training); True trains
            without them, saying how many.
        data_workers: parallel augmentation calls of the tf.data map; the
            batches are the same for any number (every draw is keyed by the
            seed and the example's position).
        data_mode ("auto"): "memory" loads each split as uint8 arrays;
            "stream" keeps only the file list (folders, Tiny-ImageNet) or
            the record index (TFDS in the array_record format) and decodes
            each image in the tf.data map that augments it, for data that
            does not fit in memory; "auto" streams a split whose uint8 size
            exceeds what `memory_budget_gb` has left. The same batches
            either way (`keras_smallvit.training.streaming`).
        memory_budget_gb: the memory "auto" may fill with images, in GB;
            None = half of the memory available when the data load.
        normalize (True): feed `(x / 255 - mean) / std`, as the official code.
        normalization_mean / normalization_std: per-channel statistics in
            [0, 1] units; None = the dataset's (the recipe's numbers for
            CIFAR-10/100, SVHN, Tiny-ImageNet; computed from the training
            split for digits and folders). The run records the values it
            used in `config.json`, and the export carries them.

    Recipe:
        epochs (100), warmup_epochs (None = epochs // 10, the recipe's 10
            of 100; the run records the number): per-step linear warm-up
            from `warmup_start_lr` to `lr`, then cosine decay to `min_lr`.
        repeated_augmentation: passes over the data per epoch (3, as the
            official code's sampler).
        batch_size (128), lr (None = the registry's paper rate: 3e-3 for ViT,
            1e-3 for the others), weight_decay (0.05, AdamW),
            label_smoothing (0.1).
        crop_padding (4): random crop after zero padding; 0 disables.
        random_resized_crop: None, or the (min, max) share of the image's
            area of Inception's random resized crop (DeiT's `(0.08, 1.0)`;
            aspect ratio 3/4 to 4/3, resized back bicubically, see
            `pipeline.random_resized_crop`), in place of the padded crop
            (then `crop_padding` 0). It crops the stored `image_size` image.
        horizontal_flip (True).
        augmentation: "autoaugment" (the papers': one sub-policy of
            `autoaugment_policy` per image), "randaugment" (`randaugment_ops`
            ops, each at `randaugment_factor` of its magnitude range, on the
            same 14 ops) or "none".
        randaugment_magnitude_std (0.0): with > 0, each RandAugment op's
            magnitude is drawn around `randaugment_factor` with this std,
            clipped to [0, 1] (timm's `mstd`: DeiT's `rand-m9-mstd0.5` is
            factor 0.9, std 0.05).
        autoaugment_policy: "cifar10", "svhn" or "imagenet"; None = the
            dataset's as in the papers (SVHN: svhn, Tiny-ImageNet: imagenet,
            others: cifar10).
        mix_prob (0.5): fraction of batches mixed; each mixed batch uses
            CutMix or Mixup with equal chance (the official code), with one
            lambda ~ Beta(alpha, alpha) and one permutation per batch.
        mixup_alpha (1.0), cutmix_alpha (1.0): 0 disables that one.
        random_erasing (0.25): probability per image; area 2-40 % of the
            image, aspect 0.3-3.3, filled with the mean (recipe).

    Execution:
        precision: "float32", "mixed_bfloat16" or "mixed_float16" (loss
            scaling is automatic for float16).
        jit_compile: "auto" (XLA on TensorFlow/JAX, off on torch), True or
            False (True on torch means torch.compile).
        distribute: data parallel over all local devices (JAX
            `keras.distribution.DataParallel`, TF `MirroredStrategy`).
        batch_augmentation: where the batch-level steps of the recipe run
            (normalisation, random erasing, CutMix/Mixup): "host" (the
            tf.data pipeline) or "device" (inside the compiled train step,
            `keras_smallvit.training.DeviceBatchAugmentation`: the pipeline
            sends uint8 images, 4x less host-to-device traffic, and the
            drawn parameters). The per-image uint8 steps (crop, flip,
            AutoAugment/RandAugment) and every random draw stay on the
            host, keyed as in "host" mode, so both give the same batches up
            to float rounding. Not with `aal` or `distillation`, nor with `distribute` on
            TensorFlow (`MirroredStrategy` splits the batch that one
            permutation mixes).
        seed: seeds weights, data order and augmentation.
        workdir: the run folder (config, logs, checkpoints, backup, export).
        export: write a SavedModel for serving at the end (`saved_model/`,
            every backend; see `keras_smallvit.export_for_serving`).
        steps_per_epoch: cap on steps per epoch (None = a full epoch).
        diagnostics: after every epoch, attention statistics of a fixed batch
            of `diagnostics_images` test images to TensorBoard
            (`tensorboard/diagnostics`) and `diagnostics/epoch_<k>.json`
            (`keras_smallvit.diagnostics.AttentionDiagnostics`; transformer
            models only). Off: training runs no extra forward pass.
        diagnostics_images: size of that batch (16).

    AAL (attention-link regularization, `keras_smallvit.aal`; training only,
    the saved and exported model is the student alone):
        aal: train the model with attention links to a frozen CNN teacher.
        aal_teacher (CLI `--teacher` / `--teacher-weights`): the teacher's
            `.keras` file, a run folder (its `last.keras`), a `.weights.h5`
            file of `aal_teacher_model`, or "imagenet": `aal_teacher_model`
            (an EfficientNet) with `keras.applications`' ImageNet weights
            from Keras' cache (`$KERAS_HOME/models`, downloaded there once if
            absent), fed the images before the pipeline's normalisation
            (`aal` only: its head is new). None with `aal_teacher_model`
            set: a teacher run of that model on the same data is trained
            first into `<workdir>/teacher` (its `last.keras` is used). The
            `aal_teacher*` fields are the one teacher of `aal` and of
            `distillation` (either or both).
        aal_teacher_model: registry name of the teacher (e.g. "resnet56").
        aal_teacher_overrides: its `create_model` arguments.
        aal_teacher_epochs: epochs of the teacher run (None = `epochs`).
        aal_lambda (2000): initial weight of the link loss.
        aal_decay ("0.99@0.6667,0.98"): per-epoch decay of lambda: the
            paper's 0.99 for the first 2/3 of the epochs, then 0.98 (see
            `keras_smallvit.aal.parse_link_decay`).
        aal_links ("full"): "full", "alpha" or "beta" (paper Table 1, by
            relative depth).
        aal_teacher_layers ("block_normalization"): the teacher maps:
            "block_normalization", "normalization", "after_normalization" or
            comma-separated layer names.

    Logit distillation (DeiT, Touvron et al. 2021; `keras_smallvit.aal.LogitDistiller`;
    training only, the saved and exported model is the student alone):
        distillation: None (off), "soft" or "hard": the student's one head
            learns from the frozen teacher of `aal_teacher` /
            `aal_teacher_model` (its logits, the same classes) on the same
            augmented and mixed batch. "hard": `(1 - alpha) CE(logits,
            labels) + alpha CE(logits, argmax teacher)`; "soft": `(1 - alpha)
            CE(logits, labels) + alpha tau^2 KL(softmax(teacher / tau) ||
            softmax(logits / tau))` (summed over classes, averaged over the
            batch). CE is the recipe's loss (label smoothing, Mixup/CutMix
            labels). A student with DeiT's distillation token and head
            (`deit_*_distilled`): CE trains the class head, the teacher term
            the distillation head, and the saved model outputs their mean
            (DeiT). With `aal`: `(1 - alpha) CE + alpha D + lambda L_att`
            (the AAL paper's "CE + AAL + hard").
        distillation_alpha (0.5, DeiT's code; hard with 0.5 is the paper's
            1/2 + 1/2): weight of the teacher term, in [0, 1].
        distillation_tau (1.0, DeiT's code; its paper's soft runs use 3 with
            alpha 0.1): the temperature of "soft", > 0 (unused by "hard").
    """

    model: str = "sl_vit"
    techniques: Optional[Tuple[str, ...]] = None
    model_overrides: dict = dataclasses.field(default_factory=dict)
    drop_path_rate: float = 0.1
    sata_lr: Optional[float] = None
    sata_threshold: Optional[float] = None

    dataset: str = "cifar100"
    data_dir: Optional[str] = None
    image_size: Optional[int] = None
    resize: str = "squash"
    subset_ratio: Optional[float] = None
    subset_seed: int = 0
    max_train_examples: Optional[int] = None
    max_test_examples: Optional[int] = None
    validation_split: Optional[float] = None
    validation_split_seed: int = 0
    skip_unreadable_images: bool = False
    data_workers: int = 4
    data_mode: str = "auto"
    memory_budget_gb: Optional[float] = None
    normalize: bool = True
    normalization_mean: Optional[Tuple[float, float, float]] = None
    normalization_std: Optional[Tuple[float, float, float]] = None

    epochs: int = 100
    warmup_epochs: Optional[int] = None
    repeated_augmentation: int = 3
    batch_size: int = 128
    eval_batch_size: int = 256
    lr: Optional[float] = None
    warmup_start_lr: float = 1e-6
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    crop_padding: int = 4
    horizontal_flip: bool = True
    augmentation: str = "autoaugment"
    autoaugment_policy: Optional[str] = None
    randaugment_ops: int = 2
    randaugment_factor: float = 0.5
    randaugment_magnitude_std: float = 0.0
    random_resized_crop: Optional[Tuple[float, float]] = None
    mix_prob: float = 0.5
    mixup_alpha: float = 1.0
    cutmix_alpha: float = 1.0
    random_erasing: float = 0.25

    precision: str = "float32"
    jit_compile: object = "auto"
    distribute: bool = False
    batch_augmentation: str = "host"
    seed: int = 0
    workdir: str = "runs/default"
    export: bool = True
    steps_per_epoch: Optional[int] = None
    diagnostics: bool = False
    diagnostics_images: int = 16

    # --- AAL ---
    aal: bool = False
    aal_teacher: Optional[str] = None
    aal_teacher_model: Optional[str] = None
    aal_teacher_overrides: dict = dataclasses.field(default_factory=dict)
    aal_teacher_epochs: Optional[int] = None
    aal_lambda: float = 2000.0
    aal_decay: str = "0.99@0.6667,0.98"
    aal_links: str = "full"
    aal_teacher_layers: str = "block_normalization"

    # --- Logit distillation (the same teacher) ---
    distillation: Optional[str] = None
    distillation_alpha: float = 0.5
    distillation_tau: float = 1.0

    def validate(self):
        """Raises `ValueError` naming the first invalid field: `check_fields()`,
        then `check_backend()`.

        Returns:
            `self`.
        """
        return self.check_fields().check_backend()

    def check_fields(self):
        """The checks of every field that need no Keras: raises `ValueError`
        naming the first invalid field. The command line runs it before it
        imports Keras (then the whole `validate()`).

        `model`, `model_overrides`, `techniques` and `aal_teacher_model`
        are checked against the presets' data table
        (`keras_smallvit.models.preset_table`), or the live registry once
        imported (models registered at run time), with the same messages;
        `techniques` against the one vocabulary
        (`keras_smallvit.utils.technique_names.known_techniques`: the
        built-in names and the block techniques registered at run time); the
        AAL settings against `keras_smallvit.utils.aal_settings`.

        Returns:
            `self`.
        """
        from keras_smallvit import data

        for field in dataclasses.fields(self):
            check_field_type(field.name, getattr(self, field.name))
            check_finite(field.name, getattr(self, field.name))
        # The model name, the `model.<arg>` overrides (by create_model's rule)
        # and the techniques, before any training.
        check_model_settings(_known_models(), self.model, self.model_overrides, self.techniques)
        if not self.dataset.startswith(data.FOLDER_PREFIX):
            check_choice("dataset", self.dataset, data.DATASET_NAMES[:-1])
        check_choice("resize", self.resize, RESIZE_POLICIES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("batch_augmentation", self.batch_augmentation, BATCH_AUGMENTATIONS)
        if self.batch_augmentation == "device" and self.aal:
            # The distiller is a Trainer with its own loss and metrics, which a
            # wrapping model would neither compute nor report.
            raise ValueError(
                "Invalid `batch_augmentation` 'device' with `aal` True: AAL trains with "
                "`batch_augmentation='host'`. Allowed values with `aal`: 'host'."
            )
        if self.batch_augmentation == "device" and self.distillation is not None:
            raise ValueError(
                f"Invalid `batch_augmentation` 'device' with `distillation` {self.distillation!r}: the "
                "distiller trains with `batch_augmentation='host'`. Allowed values with `distillation`: 'host'."
            )
        check_choice("data_mode", self.data_mode, DATA_MODES)
        if self.memory_budget_gb is not None and not self.memory_budget_gb > 0:
            raise ValueError(f"Invalid `memory_budget_gb` {self.memory_budget_gb}: must be > 0 or None.")
        check_choice("augmentation", self.augmentation, AUGMENTATIONS)
        if self.autoaugment_policy is not None:
            check_choice("autoaugment_policy", self.autoaugment_policy, AUTOAUGMENT_POLICIES)
        check_positive_int("randaugment_ops", self.randaugment_ops)
        if not isinstance(self.normalize, bool):
            raise ValueError(f"Invalid `normalize` {self.normalize!r}. Allowed values: True, False.")
        for name in ("normalization_mean", "normalization_std"):
            value = getattr(self, name)
            if value is None:
                continue
            if (
                not isinstance(value, (tuple, list))
                or len(value) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            ):
                raise ValueError(f"Invalid `{name}` {value!r}: expected None or 3 numbers (per channel, in [0, 1] units).")
        if self.normalization_std is not None and not all(v > 0 for v in self.normalization_std):
            raise ValueError(f"Invalid `normalization_std` {self.normalization_std!r}: every value must be > 0.")
        check_choice("jit_compile", self.jit_compile, JIT_CHOICES)
        for name in ("epochs", "repeated_augmentation", "batch_size", "eval_batch_size", "data_workers"):
            check_positive_int(name, getattr(self, name))
        if self.validation_split is not None:
            check_range("validation_split", self.validation_split, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if self.subset_ratio is not None:
            check_range("subset_ratio", self.subset_ratio, 0.0, 1.0, low_inclusive=False)
        if isinstance(self.subset_seed, bool) or self.subset_seed < 0:
            raise ValueError(f"Invalid `subset_seed` {self.subset_seed!r}: an integer >= 0.")
        if isinstance(self.validation_split_seed, bool) or self.validation_split_seed < 0:
            raise ValueError(f"Invalid `validation_split_seed` {self.validation_split_seed!r}: an integer >= 0.")
        if not isinstance(self.skip_unreadable_images, bool):
            raise ValueError(
                f"Invalid `skip_unreadable_images` {self.skip_unreadable_images!r}. Allowed values: True, False."
            )
        for name in ("image_size", "steps_per_epoch", "max_train_examples", "max_test_examples"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"Invalid `warmup_epochs` {self.warmup_epochs}: must be in [0, epochs) = [0, {self.epochs})."
            )
        for name in ("lr", "sata_lr", "sata_threshold"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Invalid `{name}` {value}: must be > 0 or None.")
        for name in ("drop_path_rate", "label_smoothing", "mix_prob", "random_erasing", "randaugment_factor"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("mixup_alpha", "cutmix_alpha", "weight_decay", "min_lr", "warmup_start_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"Invalid `{name}` {getattr(self, name)}: must be >= 0.")
        self._validate_schedule()
        if self.mix_prob > 0 and self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError(
                f"Invalid `mix_prob` {self.mix_prob} with `mixup_alpha` 0 and `cutmix_alpha` 0: batches "
                "would be picked for mixing that neither Mixup nor CutMix may mix. Allowed: mix_prob 0 "
                "(no mixing), or mixup_alpha and/or cutmix_alpha > 0."
            )
        if self.crop_padding < 0:
            raise ValueError(f"Invalid `crop_padding` {self.crop_padding}: must be >= 0.")
        if self.randaugment_magnitude_std < 0:
            raise ValueError(f"Invalid `randaugment_magnitude_std` {self.randaugment_magnitude_std}: must be >= 0.")
        if self.random_resized_crop is not None:
            scale = self.random_resized_crop
            if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
                raise ValueError(
                    f"Invalid `random_resized_crop` {scale!r}: expected None or (min, max) shares of the image "
                    "area with 0 < min <= max <= 1 (DeiT: (0.08, 1.0))."
                )
            if self.crop_padding:
                raise ValueError(
                    f"Invalid `crop_padding` {self.crop_padding} with `random_resized_crop` {scale!r}: the "
                    "random resized crop replaces the padded crop. Allowed values with it: 0."
                )
        if not isinstance(self.diagnostics, bool):
            raise ValueError(f"Invalid `diagnostics` {self.diagnostics!r}. Allowed values: True, False.")
        check_positive_int("diagnostics_images", self.diagnostics_images)
        if self.distillation is not None:
            check_distillation_settings(self.distillation, self.distillation_alpha, self.distillation_tau)
        if self.uses_teacher():
            self._validate_teacher()
        if self.aal:
            check_aal_settings(self.aal_links, self.aal_decay, self.aal_lambda, self.aal_teacher_layers)
        return self

    def check_backend(self):
        """The checks that depend on the Keras backend (imports Keras):
        `batch_augmentation` with `distribute`. Run after `check_fields()`.

        Returns:
            `self`.
        """
        if self.batch_augmentation == "device" and self.distribute:
            import keras

            if keras.backend.backend() == "tensorflow":
                raise ValueError(
                    "Invalid `batch_augmentation` 'device' with `distribute` True on TensorFlow: "
                    "MirroredStrategy splits the batch across replicas, and the batch's mixing "
                    "permutation spans the whole batch. Allowed values with `distribute` on "
                    "TensorFlow: 'host' (or the JAX backend, whose data parallelism keeps the batch whole)."
                )
        return self

    def uses_teacher(self):
        """Whether the run trains with a frozen teacher (`aal` or `distillation`)."""
        return bool(self.aal) or self.distillation is not None

    def _validate_schedule(self):
        """The learning-rate schedule runs from `warmup_start_lr` up to `lr`
        (over `warmup_epochs`), then down to `min_lr`: both ends at most
        `lr`. With `lr` None the model's paper rate."""
        lr = self.lr if self.lr is not None else _known_models()[self.model].paper_lr
        source = "`lr`" if self.lr is not None else f"`lr` (None: the paper rate of {self.model!r})"
        if self.min_lr > lr:
            raise ValueError(
                f"Invalid `min_lr` {self.min_lr}: greater than {source} {lr}, which the cosine decays "
                f"down to min_lr. Allowed: 0 <= min_lr <= {lr}."
            )
        if self.resolved_warmup_epochs() > 0 and self.warmup_start_lr > lr:
            raise ValueError(
                f"Invalid `warmup_start_lr` {self.warmup_start_lr}: greater than {source} {lr}, which "
                f"the warm-up rises to from warmup_start_lr. Allowed: 0 <= warmup_start_lr <= {lr} "
                "(or warmup_epochs 0)."
            )

    def _validate_teacher(self):
        """The teacher of `aal` and `distillation`."""
        if self.aal_teacher_model is not None:
            # The teacher builder takes its own num_classes / image_size (`teacher.<arg>`).
            overrides = [k for k in self.aal_teacher_overrides if k not in ("num_classes", "image_size")]
            check_model_settings(_known_models(), self.aal_teacher_model, overrides, argument="aal_teacher_model")
        if self.aal_teacher_epochs is not None:
            check_positive_int("aal_teacher_epochs", self.aal_teacher_epochs)
        if self.aal_teacher is None and self.aal_teacher_model is None:
            uses = " or ".join(["`aal`"] * bool(self.aal) + ["`distillation`"] * (self.distillation is not None))
            raise ValueError(
                f"Invalid `aal_teacher`: None. With {uses}, give a teacher file (.keras, or .weights.h5 "
                "with `aal_teacher_model`) or `aal_teacher_model` alone to train a teacher first."
            )
        if self.aal_teacher is None:
            return
        teacher = str(self.aal_teacher)
        if teacher.lower() == "imagenet":
            if self.aal_teacher_model is None:
                raise ValueError(
                    "Invalid `aal_teacher_model`: None. `aal_teacher` 'imagenet' loads ImageNet weights into a "
                    f"model: name it. Allowed values: {', '.join(IMAGENET_MODELS)}."
                )
            if self.aal_teacher_model in PRESET_ROWS and self.aal_teacher_model not in IMAGENET_MODELS:
                resnet = PRESET_ROWS[self.aal_teacher_model][0] == "ResNet"
                raise ValueError(
                    f"Invalid `aal_teacher` 'imagenet' for `aal_teacher_model` {self.aal_teacher_model!r}: no "
                    f"ImageNet weights reach it the Keras way ({NO_IMAGENET_WEIGHTS if resnet else 'none published'}). "
                    "Allowed values: 'imagenet' "
                    f"with {', '.join(IMAGENET_MODELS)}; for {self.aal_teacher_model!r} a local .weights.h5 or "
                    ".keras file of it, or a run folder."
                )
            if self.distillation is not None:
                raise ValueError(
                    f"Invalid `distillation` {self.distillation!r} with `aal_teacher` 'imagenet': logit "
                    "distillation needs a teacher of the student's classes, and an ImageNet teacher's head is new "
                    "(its features are pretrained, not its logits). Allowed values: None with 'imagenet' (use "
                    "`aal`), or a teacher file / run folder trained on this data."
                )
        elif not teacher.endswith((".keras", ".weights.h5")) and not os.path.isdir(teacher):
            raise ValueError(
                f"Invalid `aal_teacher` {self.aal_teacher!r}. Allowed values: a .keras or .weights.h5 file, a run "
                "folder (its last.keras), or 'imagenet' (with `aal_teacher_model`)."
            )
        elif teacher.endswith(".weights.h5") and self.aal_teacher_model is None:
            raise ValueError(
                "Invalid `aal_teacher_model`: None. A .weights.h5 teacher file holds no architecture: "
                "name the teacher model (e.g. 'resnet56')."
            )

    def resolved_warmup_epochs(self):
        """`warmup_epochs`, or for None the recipe's share: `epochs // 10`."""
        return self.epochs // 10 if self.warmup_epochs is None else self.warmup_epochs

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        # The files of older versions, as today's (keras_smallvit.utils.legacy).
        values = legacy.upgrade_train_config(json.loads(text))
        for key in values:
            check_field_name(key)
        for name in ("techniques", "normalization_mean", "normalization_std"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


_dataclass_init = TrainConfig.__init__


@functools.wraps(_dataclass_init)
def _checked_init(self, *args, **kwargs):
    # The dataclass's own `__init__` raises a `TypeError` ("unexpected keyword
    # argument") for a misspelt field: a `ValueError` naming it and the fields.
    for key in kwargs:
        if key not in _FIELD_NAMES:
            raise ValueError(
                f"Invalid argument `{key}` for TrainConfig. Allowed fields: {', '.join(field_names())}."
            )
    _dataclass_init(self, *args, **kwargs)


TrainConfig.__init__ = _checked_init


def field_names():
    return tuple(sorted(f.name for f in dataclasses.fields(TrainConfig)))


def _known_models():
    """`{name: ModelFacts}` of the models a config may name: the registry's
    once imported (with any model registered at run time: `register_model`
    imports it), else the presets' data table, equal to the registry's
    presets (`tests/models/test_preset_table.py`) and free of Keras."""
    if "keras_smallvit.models.registry" in sys.modules:
        from keras_smallvit.models.registry import model_facts

        return model_facts()
    return PRESET_FACTS


_FIELD_NAMES = frozenset(field_names())


def check_finite(name, value):
    """Raises a `ValueError` if a number of field `name` (or of its tuple)
    is NaN or infinite: `lr=inf` or `weight_decay=nan` pass every `< 0`
    check and make the run diverge."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    for item in values:
        if isinstance(item, numbers.Real) and not isinstance(item, bool) and not math.isfinite(item):
            raise ValueError(f"Invalid `{name}` {value!r}: every number must be finite (not NaN or infinite).")
    return value


def check_field_name(name):
    """Raises a `ValueError` (not the dataclass's `TypeError`) for a key that
    is no `TrainConfig` field."""
    # The form `--set` has always used: "Invalid `key`: 'nosuch'. Allowed values: ...".
    return check_choice("key", name, field_names())


def _field_types():
    return typing.get_type_hints(TrainConfig)


def _unwrap_optional(annotation):
    """`Optional[X]` -> `(X, True)`, `X` -> `(X, False)`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def _describe(annotation):
    kind, optional = _unwrap_optional(annotation)
    origin = typing.get_origin(kind) or kind
    text = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a dict"}.get(origin)
    if origin is tuple:
        items = typing.get_args(kind)
        if len(items) == 2 and items[1] is Ellipsis:
            text = f"comma-separated {_describe(items[0])} values"
        elif items:
            text = f"{len(items)} comma-separated numbers" if float in items else f"{len(items)} values"
        else:
            text = "comma-separated values"
    text = text or "a value"
    return text + " or none" if optional else text


def _type_matches(value, kind):
    origin = typing.get_origin(kind) or kind
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if origin is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        items = typing.get_args(kind)
        if len(items) == 2 and items[1] is Ellipsis:
            return all(_type_matches(v, items[0]) for v in value)
        if items:
            return len(value) == len(items) and all(_type_matches(v, k) for v, k in zip(value, items))
        return True
    return True  # `object` (jit_compile): checked by its own choice list


def check_field_type(name, value):
    """Raises a `ValueError` if `value` is not of field `name`'s type (e.g. a
    bool field set to `"maybe"`).

    Args:
        name: a `TrainConfig` field.
        value: the value set programmatically or parsed from `--set`.
    """
    annotation = _field_types()[check_field_name(name)]
    kind, optional = _unwrap_optional(annotation)
    if value is None and optional:
        return value
    if not _type_matches(value, kind):
        if kind is bool:
            raise ValueError(f"Invalid `{name}` {value!r}. Allowed values: True, False.")
        raise ValueError(f"Invalid `{name}` {value!r}. Expected {_describe(annotation)}.")
    return value


_INT_TEXT = re.compile(r"^[+-]?\d+$")


def _parse_as(name, text, kind, annotation):
    """`text` read as a value of type `kind` (no `None` here)."""
    origin = typing.get_origin(kind) or kind
    stripped = text.strip()
    lowered = stripped.lower()
    if origin is bool:
        if lowered not in ("true", "false"):
            raise ValueError(f"Invalid `{name}` {text!r}. Allowed values: true, false.")
        return lowered == "true"
    if origin is int:
        if not _INT_TEXT.match(stripped):
            raise ValueError(f"Invalid `{name}` {text!r}. Expected {_describe(annotation)}.")
        return int(stripped)
    if origin is float:
        try:
            return float(stripped)
        except ValueError:
            raise ValueError(f"Invalid `{name}` {text!r}. Expected {_describe(annotation)}.") from None
    if origin is str:
        # A quoted string (`'runs/a b'`) loses its quotes, as with `parse_value`.
        if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
            return stripped[1:-1]
        return text
    if origin is dict:
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, dict):
            raise ValueError(f"Invalid `{name}` {text!r}. Expected {_describe(annotation)}.")
        return value
    if origin is tuple:
        parts = [part.strip() for part in stripped.strip("()[] ").split(",")]
        parts = [part for part in parts if part]
        items = typing.get_args(kind)
        if len(items) == 2 and items[1] is Ellipsis:
            item_kinds = [items[0]] * len(parts)
        elif items:
            if len(parts) != len(items):
                raise ValueError(f"Invalid `{name}` {text!r}. Expected {_describe(annotation)}.")
            item_kinds = list(items)
        else:
            return tuple(parse_value(part) for part in parts)
        try:
            return tuple(_parse_as(name, part, k, k) for part, k in zip(parts, item_kinds))
        except ValueError:
            raise ValueError(f"Invalid `{name}` {text!r}. Expected {_describe(annotation)}.") from None
    return parse_value(text)  # `object` (jit_compile: auto / true / false)


def parse_field_value(name, text):
    """Reads `--set name=text` by the type of field `name`.

    Args:
        name: a `TrainConfig` field (a `ValueError` lists them otherwise).
        text: the text after `=`. `none` / `null` is None for Optional
            fields; bools are `true` / `false`; tuples are `a,b` or `(a,b)`.

    Returns:
        The typed value; raises a `ValueError` naming the field and what it
        allows when `text` does not read as that type.
    """
    annotation = _field_types()[check_field_name(name)]
    kind, optional = _unwrap_optional(annotation)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    return _parse_as(name, text, kind, annotation)


# What `smoke` sets; `resolve_config` keeps the fields given on the command line.
SMOKE_SETTINGS = dict(
    epochs=2,
    warmup_epochs=1,
    repeated_augmentation=1,
    batch_size=16,
    eval_batch_size=32,
    max_train_examples=64,
    max_test_examples=32,
    data_workers=2,
)


def smoke(config, keep=()):
    """Shrinks a config to a seconds-long run: same code paths, tiny budget.

    Args:
        config: the `TrainConfig` to shrink.
        keep: field names to leave as they are (the flags the user gave).
    """
    changes = {k: v for k, v in SMOKE_SETTINGS.items() if k not in keep}
    if "warmup_epochs" not in keep:
        # An explicit `--epochs 1` leaves no room for the smoke warm-up epoch.
        epochs = changes.get("epochs", config.epochs)
        changes["warmup_epochs"] = min(SMOKE_SETTINGS["warmup_epochs"], max(epochs - 1, 0))
    return dataclasses.replace(config, **changes)


def parse_value(text):
    """`"3e-3"` -> 3e-3, `"true"` -> True, `"none"` -> None, `"(spt,lsa)"` ->
    ("spt", "lsa"); anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if "," in text:
        return tuple(part.strip() for part in text.strip("()[] ").split(",") if part.strip())
    return text


def apply_overrides(config, assignments):
    """Applies `["key=value", ...]` (or a dict) to a copy of `config`.

    Keys are `TrainConfig` fields, and a text value is read by the field's
    type (see `parse_field_value`); `model.<arg>=value` sets a `create_model`
    argument (e.g. `model.depth=6`), `teacher.<arg>=value` one of the AAL
    teacher's (`aal_teacher_overrides`); those are read by `parse_value`.

    Args:
        config: a `TrainConfig`.
        assignments: `"key=value"` strings, or a dict of already typed values.
    """
    if isinstance(assignments, dict):
        items = [(key, value, False) for key, value in assignments.items()]
    else:
        items = []
        for assignment in assignments:
            if "=" not in assignment:
                raise ValueError(f"Invalid override {assignment!r}: expected `key=value`.")
            key, value = assignment.split("=", 1)
            items.append((key.strip(), value, True))
    changes, model_overrides = {}, dict(config.model_overrides)
    teacher_overrides = dict(config.aal_teacher_overrides)
    for key, value, is_text in items:
        if key.startswith("model."):
            model_overrides[key[len("model."):]] = parse_value(value) if is_text else value
            continue
        if key.startswith("teacher."):
            teacher_overrides[key[len("teacher."):]] = parse_value(value) if is_text else value
            continue
        check_field_name(key)
        if is_text:
            value = parse_field_value(key, value)
        if key == "augmentation" and value is None:
            value = "none"  # `augmentation=None` means the choice, not a missing value
        if key == "techniques" and value is not None:
            value = (value,) if isinstance(value, str) else tuple(value)
            value = tuple(v for v in value if v)
        changes[key] = value
    changes.setdefault("model_overrides", model_overrides)
    changes.setdefault("aal_teacher_overrides", teacher_overrides)
    return dataclasses.replace(config, **changes)
