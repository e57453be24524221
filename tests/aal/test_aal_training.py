"""AAL in the training recipe: config, runner (student-only checkpoints and
export), resume, and the CLI training a teacher first."""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from keras_smallvit.training import TrainConfig
from keras_smallvit.training import apply_overrides
from keras_smallvit.training import load_split
from keras_smallvit.training import smoke
from keras_smallvit.training import train
from keras_smallvit.training.pipeline import preprocess_eval_images
from tests.aal.test_distiller import TINY_TEACHER
from tests.backend_utils import assert_same_saved_weights
from tests.contract import BACKEND

TINY_VIT = {"depth": 2, "hidden_dim": 16, "num_heads": 2, "head_dim": 8}
TEACHER_OVERRIDES = {k: v for k, v in TINY_TEACHER.items() if k not in ("num_classes", "image_size")}


def tiny_aal_config(workdir, **changes):
    """A seconds-long digits run of a 2-block ViT with AAL."""
    config = smoke(TrainConfig(model="vit", dataset="digits", image_size=16, workdir=str(workdir)))
    fields = dict(
        model_overrides=dict(TINY_VIT),
        max_train_examples=32,
        max_test_examples=16,
        augmentation="none",
        jit_compile=BACKEND == "jax",  # un-jitted JAX steps compile op by op: slower
        export=False,
        aal=True,
        aal_teacher_model="resnet56",
        aal_teacher_overrides=dict(TEACHER_OVERRIDES),
        aal_links="alpha",
        aal_decay="0.5",
    )
    fields.update(changes)
    return dataclasses.replace(config, **fields)


def teacher_weights_file(tmp_path):
    import keras_smallvit

    teacher = keras_smallvit.create_model("resnet56", num_classes=10, image_size=16, **TEACHER_OVERRIDES)
    path = os.path.join(tmp_path, "teacher.weights.h5")
    teacher.save_weights(path)
    return path


def test_bad_aal_config_names_the_field(tmp_path):
    good = tiny_aal_config(tmp_path, aal_teacher="t.keras")
    good.validate()
    for changes, field in [
        ({"aal_links": "gamma"}, "aal_links"),
        ({"aal_decay": "1.5"}, "aal_decay"),
        ({"aal_lambda": -1.0}, "aal_lambda"),
        ({"aal_teacher": None, "aal_teacher_model": None}, "aal_teacher"),
        ({"aal_teacher": "t.pt"}, "aal_teacher"),
        ({"aal_teacher": "t.weights.h5", "aal_teacher_model": None}, "aal_teacher_model"),
        ({"aal_teacher_model": "resnet57"}, "aal_teacher_model"),
        ({"aal_teacher_epochs": 0}, "aal_teacher_epochs"),
    ]:
        with pytest.raises(ValueError, match=f"`{field}`"):
            dataclasses.replace(good, **changes).validate()
    dataclasses.replace(good, aal=False, aal_links="gamma").validate()  # AAL fields only matter with aal
    config = apply_overrides(TrainConfig(), ["aal=true", "aal_decay=0.99@0.5,0.98", "teacher.stem_width=4"])
    assert config.aal and config.aal_decay == "0.99@0.5,0.98" and config.aal_teacher_overrides == {"stem_width": 4}
    assert TrainConfig.from_json(config.to_json()) == config


def cli_args(workdir, *extra):
    """`training.train` arguments of a seconds-long ViT + AAL digits run."""
    return [  # (not --smoke: it would reset the example counts)
        "--model", "vit", "--image-size", "16", "--warmup-epochs", "0", "--batch-size", "16",
        "--set", "eval_batch_size=16", "--set", "data_workers=2",
        "--jit-compile", "true" if BACKEND == "jax" else "false", "--no-export", "--workdir", str(workdir),
        "--set", "augmentation=none", "--set", "max_train_examples=32", "--set", "max_test_examples=16",
        *[a for k, v in TINY_VIT.items() for a in ("--set", f"model.{k}={v}")],
        *[a for k, v in TEACHER_OVERRIDES.items() for a in ("--set", f"teacher.{k}={v}")],
        "--aal", *extra,
    ]


@pytest.mark.large
def test_cli_with_a_teacher_weights_file_saves_and_exports_the_student_only(tmp_path):
    """The CLI -> runner path end to end: checkpoints and export hold the student alone."""
    from training.train import main

    export = BACKEND in ("tensorflow", "jax")
    workdir = tmp_path / "run"
    weights = teacher_weights_file(tmp_path)
    args = cli_args(workdir, "--teacher", weights, "--teacher-model", "resnet56", "--aal-links", "alpha",
                    "--aal-lambda", "100", "--aal-decay", "0.5", "--epochs", "2")
    metrics = main([a for a in args if not (export and a == "--no-export")])
    assert metrics["aal_teacher"] == weights
    config = TrainConfig.from_json(open(os.path.join(workdir, "config.json")).read())
    assert (config.aal, config.aal_links, config.aal_lambda, config.aal_decay) == (True, "alpha", 100.0, "0.5")
    with open(os.path.join(workdir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["link_lambda"]) for r in rows] == [100.0, 50.0]  # decay 0.5 per epoch
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("ce_loss", "link_loss", "val_link_loss"))

    from keras_smallvit.training import build_model

    plain, _ = build_model(dataclasses.replace(config, aal=False), 10, 16)
    assert metrics["parameters"] == plain.count_params()
    x = preprocess_eval_images(load_split(config, "test").images[:4], config)  # the run's normalisation
    for name in ("best.keras", "last.keras"):
        model = keras.saving.load_model(os.path.join(workdir, name))
        assert sorted(v.path for v in model.weights) == sorted(v.path for v in plain.weights), name
    predictions = keras.ops.convert_to_numpy(model(x))
    with open(os.path.join(workdir, "backup", "state.json")) as f:
        assert json.load(f)["epoch"] == 2  # the backup holds the whole distiller: resumable
    if export:
        import tensorflow as tf

        serving = tf.saved_model.load(os.path.join(workdir, "saved_model"))
        assert len(serving.variables) == len(plain.variables)  # weights + random generator states
        assert not [v.name for v in serving.variables if "link" in v.name]
        uint8_images = load_split(config, "test").images[:4]  # the export takes raw images, preprocessing inside
        probabilities = serving.serve(tf.constant(uint8_images))["probabilities"].numpy()
        np.testing.assert_allclose(probabilities, keras.ops.convert_to_numpy(keras.ops.softmax(predictions)), atol=1e-5)
    with pytest.raises(SystemExit, match="--teacher.*need `--aal`"):
        main(["--teacher", "t.keras", "--workdir", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="aal_links"):
        main(["--aal", "--teacher", "t.keras", "--set", "aal_links=gamma", "--workdir", str(tmp_path / "y")])


@pytest.mark.large
@pytest.mark.skipif(BACKEND != "torch", reason="the backup path is backend-independent (tests/training covers "
                    "resume on every backend); one backend keeps this file fast")
def test_crashed_aal_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    weights = teacher_weights_file(tmp_path)
    config = tiny_aal_config(tmp_path / "uninterrupted", aal_teacher=weights, epochs=2, warmup_epochs=0)
    expected = train(config, verbose=0)
    resumed = dataclasses.replace(config, workdir=str(tmp_path / "resumed"))
    import keras_smallvit.training.runner as runner

    original = runner.RunFolder

    class CrashingRunFolder(original):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch == 0:
                raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(runner, "RunFolder", CrashingRunFolder)
    with pytest.raises(KeyboardInterrupt):
        train(resumed, verbose=0)
    monkeypatch.setattr(runner, "RunFolder", original)
    got = train(resumed, verbose=0)
    for key in ("final_top1", "final_top5", "best_top1", "best_epoch"):
        assert got[key] == expected[key], key
    assert_same_saved_weights(config.workdir, resumed.workdir)


@pytest.mark.large
@pytest.mark.skipif(BACKEND != "torch", reason="two train() runs, backend-independent glue; "
                    "the CLI test above runs the AAL runner on every backend")
def test_cli_trains_a_teacher_first_then_the_student(tmp_path):
    from training.train import main

    workdir = tmp_path / "cli"
    metrics = main(cli_args(workdir, "--teacher-model", "resnet56", "--epochs", "1", "--aal-links", "beta"))
    teacher_folder = os.path.join(str(workdir), "teacher")
    assert metrics["aal_teacher"] == os.path.join(teacher_folder, "last.keras")
    with open(os.path.join(teacher_folder, "config.json")) as f:
        teacher_config = json.load(f)
    assert (teacher_config["model"], teacher_config["aal"], teacher_config["dataset"]) == ("resnet56", False, "digits")
    assert os.path.exists(os.path.join(teacher_folder, "metrics.json"))
