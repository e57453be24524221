"""Strict arguments: unknown names and ill-typed values fail early, naming
the argument and what it allows. No model is trained or built here except
the ones that must fail before their build."""

import dataclasses

import pytest

import keras_smallvit
from keras_smallvit.models import ResNet
from keras_smallvit.models import ViTBackbone
from keras_smallvit.models.registry import check_model_arguments
from keras_smallvit.training.config import TrainConfig
from keras_smallvit.training.config import apply_overrides
from keras_smallvit.training.config import parse_field_value
from keras_smallvit.training.config import parse_value
from keras_smallvit.training.config import smoke


def resolve(argv):
    from training.train import parse_args
    from training.train import resolve_config

    return resolve_config(parse_args(argv))


@pytest.mark.parametrize("name", ["vit", "pit", "resnet56"])
def test_create_model_rejects_unknown_arguments(name):
    with pytest.raises(ValueError, match=rf"Invalid argument `depthh` for model '{name}'\. Allowed: .*dtype"):
        keras_smallvit.create_model(name, num_classes=10, image_size=32, depthh=2)


def test_allowed_arguments_come_from_the_constructors():
    vit = keras_smallvit.list_models(details=True)["vit"].arguments
    assert {"depth", "hidden_dim", "suppression", "pooling", "head_dropout", "dtype"} <= set(vit)
    assert "image_size" not in vit and "num_classes" not in vit
    assert "norm_before_pooling" in keras_smallvit.list_models(details=True)["swin"].arguments
    resnet = keras_smallvit.list_models(details=True)["resnet56"].arguments
    assert {"stage_blocks", "weights"} <= set(resnet)
    check_model_arguments("vit", {"depth": 2, "head_dropout": 0.1})  # valid: no error


@pytest.mark.parametrize("model_class", [ViTBackbone, ResNet])
def test_backbone_constructors_reject_unknown_arguments(model_class):
    # Checked before the graph would be built for ResNet, at the functional init for backbones.
    with pytest.raises(ValueError, match=rf"Invalid argument `depthh` for {model_class.__name__}\. Allowed: "):
        model_class(depthh=2)


def test_unknown_model_override_fails_at_validate():
    with pytest.raises(ValueError, match="`nosuch` for model 'vit'"):
        apply_overrides(TrainConfig(model="vit"), ["model.nosuch=1"]).validate()
    with pytest.raises(ValueError, match="`nosuch`"):
        resolve(["--model", "vit", "--set", "model.nosuch=1"])
    config = resolve(["--model", "vit", "--set", "model.depth=2"])
    assert config.model_overrides == {"depth": 2}


def test_unknown_teacher_override_fails_at_validate():
    config = TrainConfig(aal=True, aal_teacher_model="resnet56", aal_teacher_overrides={"stage_blocks": (1, 1, 1)})
    config.validate()
    with pytest.raises(ValueError, match="`depthh` for model 'resnet56'"):
        dataclasses.replace(config, aal_teacher_overrides={"depthh": 2}).validate()


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("horizontal_flip=maybe", r"Invalid `horizontal_flip` 'maybe'\. Allowed values: true, false\."),
        ("lr=abc", r"`lr` 'abc'\. Expected a number or none"),
        ("epochs=1.5", r"`epochs` '1.5'\. Expected an integer"),
        ("max_train_examples=lots", r"`max_train_examples` 'lots'\. Expected an integer or none"),
        ("normalization_mean=0.5,0.5", r"`normalization_mean` .*3 comma-separated numbers"),
        ("normalization_std=0.5,0.5,x", r"`normalization_std`"),
        ("model_overrides=depth", r"`model_overrides` 'depth'\. Expected a dict"),
        ("nosuch=1", r"Invalid `key`: 'nosuch'\. Allowed values: .*'lr'"),
    ],
)
def test_set_rejects_values_of_the_wrong_type(assignment, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(TrainConfig(), [assignment])


def test_set_parses_by_the_field_type():
    config = apply_overrides(
        TrainConfig(),
        [
            "horizontal_flip=False",
            "epochs=17",
            "lr=1",  # a float field takes an int text
            "sata_lr=none",
            "max_train_examples=20",
            "techniques=(spt,lsa)",
            "normalization_mean=0.5,0.4,0.3",
            "normalization_std=(1,1,1)",
            "augmentation=none",
            "autoaugment_policy=none",
            "workdir=runs/1e3",  # stays text, however it looks
            "aal_decay=0.99@0.6667,0.98",
            "jit_compile=false",
            "model.depth=6",
        ],
    )
    assert config.horizontal_flip is False and config.epochs == 17
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.sata_lr is None
    assert config.max_train_examples == 20 and config.techniques == ("spt", "lsa")
    assert config.normalization_mean == (0.5, 0.4, 0.3) and config.normalization_std == (1.0, 1.0, 1.0)
    assert config.augmentation == "none" and config.autoaugment_policy is None
    assert config.workdir == "runs/1e3" and config.aal_decay == "0.99@0.6667,0.98"
    assert config.jit_compile is False and config.model_overrides == {"depth": 6}
    config.validate()
    assert apply_overrides(TrainConfig(), ["techniques=spt"]).techniques == ("spt",)
    assert parse_field_value("image_size", "none") is None
    # `parse_value` (training/compare_backends.py) is unchanged.
    assert parse_value("3e-3") == 3e-3 and parse_value("none") is None and parse_value("(3,3)") == (3, 3)


@pytest.mark.parametrize(
    "changes,argument",
    [
        ({"horizontal_flip": "maybe"}, "horizontal_flip"),
        ({"export": 1}, "export"),
        ({"epochs": 2.5}, "epochs"),
        ({"lr": "abc"}, "lr"),
        ({"model_overrides": "depth=2"}, "model_overrides"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"max_train_examples": 0}, "max_train_examples"),
        ({"max_test_examples": 0}, "max_test_examples"),
        ({"steps_per_epoch": -1}, "steps_per_epoch"),
    ],
)
def test_validate_checks_types_and_sizes_set_in_code(changes, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        dataclasses.replace(TrainConfig(), **changes).validate()


def test_impossible_sizes_fail_on_the_command_line():
    with pytest.raises(ValueError, match="`steps_per_epoch`"):
        resolve(["--steps-per-epoch", "0"])
    with pytest.raises(ValueError, match="`max_train_examples`"):
        resolve(["--set", "max_train_examples=0"])


def test_steps_per_epoch_zero_is_a_clear_error_in_the_pipeline():
    from keras_smallvit.training.pipeline import steps_per_epoch

    config = dataclasses.replace(TrainConfig(), steps_per_epoch=0)
    with pytest.raises(ValueError, match="`steps_per_epoch`"):
        steps_per_epoch(1000, config)


def test_smoke_keeps_explicit_flags():
    plain = resolve(["--smoke"])
    assert (plain.batch_size, plain.epochs, plain.max_train_examples) == (16, 2, 64)
    config = resolve(["--smoke", "--batch-size", "8", "--epochs", "3", "--set", "max_train_examples=20"])
    assert (config.batch_size, config.epochs, config.max_train_examples) == (8, 3, 20)
    assert config.max_test_examples == 32 and config.warmup_epochs == 1  # the rest still shrinks
    one = resolve(["--smoke", "--epochs", "1"])  # no room for a warm-up epoch: none, not an error
    assert (one.epochs, one.warmup_epochs) == (1, 0)
    assert smoke(TrainConfig(batch_size=64), keep=("batch_size",)).batch_size == 64


def test_from_json_rejects_unknown_keys():
    text = TrainConfig().to_json()
    assert TrainConfig.from_json(text) == TrainConfig()
    bad = text.replace('"lr": null', '"lr": null, "learning_rate": 0.1')
    with pytest.raises(ValueError, match="'learning_rate'"):
        TrainConfig.from_json(bad)


def test_unknown_field_is_a_value_error_naming_it_and_the_fields():
    # Was the dataclass's TypeError "unexpected keyword argument".
    for make in (lambda: TrainConfig(bogus=1), lambda: dataclasses.replace(TrainConfig(), bogus=1)):
        with pytest.raises(ValueError, match=r"Invalid argument `bogus` for TrainConfig\. Allowed fields: .*\blr\b") as error:
            make()
        assert all(f.name in str(error.value) for f in dataclasses.fields(TrainConfig))
    assert TrainConfig(lr=1e-3).lr == 1e-3  # fields still pass, positionally too
    assert TrainConfig("vit").model == "vit"


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "changes,message",
    [
        # The schedule: warm-up from warmup_start_lr up to lr, cosine down to min_lr.
        ({"lr": 1e-3, "min_lr": 1e-2}, r"`min_lr` 0\.01: greater than `lr` 0\.001.*Allowed: 0 <= min_lr <= 0\.001"),
        ({"lr": 1e-3, "warmup_start_lr": 1e-2}, r"`warmup_start_lr` 0\.01: greater than `lr` 0\.001"),
        # lr None: the model's paper rate (sl_vit: 3e-3).
        ({"model": "sl_vit", "min_lr": 1e-2}, r"`min_lr` 0\.01: greater than `lr` \(None: the paper rate of 'sl_vit'\) 0\.003"),
        # Non-finite numbers passed every `< 0` check.
        ({"lr": INF}, r"`lr` inf: every number must be finite"),
        ({"weight_decay": NAN}, r"`weight_decay` nan: every number must be finite"),
        ({"sata_lr": INF}, r"`sata_lr` inf"),
        ({"mixup_alpha": NAN}, r"`mixup_alpha` nan"),
        ({"aal_lambda": INF}, r"`aal_lambda` inf"),
        ({"normalization_std": (0.2, INF, 0.2)}, r"`normalization_std` \(0\.2, inf, 0\.2\)"),
        # Mixing on with nothing that can mix.
        ({"mix_prob": 1.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}, r"`mix_prob` 1\.0 with `mixup_alpha` 0 and `cutmix_alpha` 0.*Allowed: mix_prob 0"),
        ({"mix_prob": 0.3, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}, r"`mix_prob` 0\.3"),
        # Techniques on a registry CNN.
        ({"model": "resnet56", "techniques": ("sata",)}, r"`techniques` \('sata',\) for model 'resnet56'.*CNN.*Allowed values: \(\) or None"),
    ],
)
def test_validate_rejects_contradictions(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TrainConfig(), **changes).validate()


@pytest.mark.parametrize(
    "changes",
    [
        {"lr": 1e-3, "min_lr": 1e-3, "warmup_start_lr": 1e-3},  # equal ends: a constant rate
        {"lr": 1e-3, "warmup_start_lr": 1e-2, "warmup_epochs": 0},  # no warm-up: its start is unused
        {"mix_prob": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0},  # mixing off
        {"mix_prob": 1.0, "mixup_alpha": 0.0, "cutmix_alpha": 1.0},  # CutMix only
        {"model": "resnet56", "techniques": ()},
    ],
)
def test_validate_accepts_the_edges_of_those_rules(changes):
    dataclasses.replace(TrainConfig(), **changes).validate()


def test_paper_rate_checks_need_no_model_class():
    # `check_fields()` (the command line, before Keras) knows the
    # paper rate from the presets' data table, as the full `validate()`.
    config = TrainConfig(model="sl_pit", min_lr=2e-3)  # PiT's paper rate: 1e-3
    for check in (config.check_fields, config.validate):
        with pytest.raises(ValueError, match=r"`min_lr` 0\.002: greater than `lr` \(None: the paper rate of 'sl_pit'\) 0\.001"):
            check()
