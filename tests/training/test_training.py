"""The training recipe: config, schedule, pipeline determinism, end-to-end runs, resume."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_smallvit.training import TrainConfig
from keras_smallvit.training import apply_overrides
from keras_smallvit.training import learning_rate_schedule
from keras_smallvit.training import load_split
from keras_smallvit.training import resolve_data_settings
from keras_smallvit.training import smoke
from keras_smallvit.training import train
from keras_smallvit.training import train_dataset
from keras_smallvit.training.optimization import model_overrides_for
from keras_smallvit.models.registry import get_model_entry
from tests.backend_utils import assert_same_saved_weights
from tests.contract import BACKEND
from tests.contract import FAST_FIT_JIT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TensorFlow's start-up banners and C++ log lines (python -m training.train hides them unless --verbose).
FRAMEWORK_BANNER = re.compile(
    r"absl::InitializeLog|oneDNN|cuda|cuDNN|cuBLAS|cuFFT|TensorRT|[EWI]0000 |TensorFlow binary is optimized"
)
TINY_VIT = {"depth": 1, "hidden_dim": 16, "num_heads": 2, "head_dim": 8}


def tiny_config(workdir, **changes):
    """A seconds-long digits run of a 1-block SL-ViT with SATA and CB."""
    config = smoke(TrainConfig(model="sl_sata_cb_vit", dataset="digits", image_size=16, workdir=str(workdir)))
    fields = dict(
        model_overrides=dict(TINY_VIT),
        max_train_examples=48,
        max_test_examples=16,
        augmentation="none",  # AutoAugment / RandAugment: tests/training/test_recipe.py
        horizontal_flip=True,
        random_erasing=0.25,
        mix_prob=0.5,
        jit_compile=FAST_FIT_JIT,  # (see tests/contract.py)
        export=False,
    )
    fields.update(changes)
    return dataclasses.replace(config, **fields)


# --- schedule ---------------------------------------------------------------


def reference_lr(step, lr, steps_per_epoch, epochs, warmup_epochs, start, end):
    """Linear warm-up per step, then cosine to `end` (written from the recipe)."""
    warmup = steps_per_epoch * warmup_epochs
    total = steps_per_epoch * epochs
    if step < warmup:
        return start + (lr - start) * step / warmup
    progress = (step - warmup) / (total - warmup)
    return end + (lr - end) * 0.5 * (1 + np.cos(np.pi * progress))


@pytest.mark.parametrize("step", [0, 1, 50, 99, 100, 101, 500, 999, 1000])
def test_schedule_matches_warmup_then_cosine(step):
    args = dict(lr=3e-3, steps_per_epoch=10, epochs=100, warmup_epochs=10, start=1e-6, end=1e-6)
    schedule = learning_rate_schedule(
        args["lr"], args["steps_per_epoch"], args["epochs"], args["warmup_epochs"], args["start"], args["end"]
    )
    got = float(keras.ops.convert_to_numpy(schedule(step)))
    np.testing.assert_allclose(got, reference_lr(step, **args), rtol=1e-5, atol=1e-10)


# --- config -----------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,argument",
    [
        ({"model": "vitt"}, "model"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"techniques": ("spt", "attention")}, "techniques"),
        ({"precision": "float8"}, "precision"),
        ({"warmup_epochs": 100}, "warmup_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"mix_prob": 1.5}, "mix_prob"),
    ],
)
def test_bad_config_names_the_argument(changes, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        dataclasses.replace(TrainConfig(), **changes).validate()


def test_overrides_parse_values_and_reject_unknown_keys():
    config = apply_overrides(
        TrainConfig(), ["lr=3e-3", "techniques=spt,lsa", "export=false", "model.depth=6", "sata_lr=none"]
    )
    assert config.lr == 3e-3 and config.techniques == ("spt", "lsa") and config.export is False
    assert config.model_overrides == {"depth": 6} and config.sata_lr is None
    with pytest.raises(ValueError, match="`key`"):
        apply_overrides(TrainConfig(), ["learning_rate=1"])


def test_impossible_batch_size_is_a_clear_error(tmp_path):
    config = tiny_config(tmp_path, batch_size=1000, max_train_examples=48)
    data = load_split(config, "train")
    with pytest.raises(ValueError, match="`batch_size`"):
        train_dataset(data, config)


def test_sata_gets_its_own_learning_rate_only_when_sata_is_on():
    from keras_smallvit.training.optimization import sata_learning_rate_multipliers

    config = TrainConfig(model="sata_vit", lr=3e-3, sata_lr=7e-5, sata_threshold=0.05)
    entry = get_model_entry("sata_vit")
    multipliers = sata_learning_rate_multipliers(config, entry)
    assert list(multipliers) == ["sata_scale"]
    np.testing.assert_allclose(multipliers["sata_scale"], 7e-5 / 3e-3)
    default_lr = sata_learning_rate_multipliers(dataclasses.replace(config, lr=None), entry)  # the paper's lr
    np.testing.assert_allclose(default_lr["sata_scale"], 7e-5 / entry.paper_lr)
    # The model carries the threshold, no learning rate.
    assert model_overrides_for(config, entry)["suppression"] == {"threshold": 0.05}
    assert sata_learning_rate_multipliers(dataclasses.replace(config, sata_lr=None), entry) == {}
    assert sata_learning_rate_multipliers(dataclasses.replace(config, techniques=("spt",)), entry) == {}
    plain = dataclasses.replace(config, model="vit")
    assert sata_learning_rate_multipliers(plain, get_model_entry("vit")) == {}
    assert "suppression" not in model_overrides_for(plain, get_model_entry("vit"))  # setting sata_lr must not switch SATA on


def test_every_shipped_config_is_valid_and_uses_its_paper_rate():
    from training.configs import get_config
    from training.configs import list_configs

    for name in list_configs():
        config = get_config(name)
        config.validate()
        entry = get_model_entry(config.model)
        overrides = model_overrides_for(config, entry)
        # CNNs have no stochastic depth: their builders would reject the argument.
        assert ("drop_path_rate" in overrides) == entry.stochastic_depth, name
        assert entry.paper_lr == (3e-3 if config.model.endswith("vit") or config.model.startswith(("resnet", "eff")) else 1e-3)


def test_cnn_baseline_trains_with_the_recipe(tmp_path):
    """The recipe on a registered CNN (no drop path, no techniques)."""
    config = tiny_config(
        tmp_path / "run",
        model="resnet56",
        techniques=None,
        epochs=1,
        warmup_epochs=0,
        model_overrides={"stage_blocks": (1, 1, 1), "stage_widths": (4, 8, 8), "stem_width": 4},
    )
    metrics = train(config, verbose=0)
    assert 0.0 <= metrics["final_top1"] <= 1.0
    reloaded = keras.saving.load_model(os.path.join(config.workdir, "last.keras"))
    assert reloaded.count_params() < 10_000


def test_sata_scale_moves_at_its_own_rate_in_training(tmp_path):
    """One step with a constant lr through build_model/compile_model: the
    decay is `sata_lr * wd * s` and Adam's first step is at most sata_lr
    (exactly sata_lr * g / (|g| + eps)), not the model's lr.
    (tests/training/test_optimizer.py checks the exact recipe.)"""
    config = tiny_config(tmp_path, lr=1e-2, sata_lr=1e-4, warmup_epochs=0, min_lr=1e-2, weight_decay=0.5)
    from keras_smallvit.training import build_model, compile_model

    model, entry = build_model(config, 10, 16)
    compile_model(model, config, entry, steps_per_epoch=1, num_classes=10)
    assert model.optimizer.learning_rate_multipliers == {"sata_scale": 1e-4 / 1e-2}
    (scale,) = [v for v in model.trainable_variables if v.name == "sata_scale"]  # one block
    before = float(keras.ops.convert_to_numpy(scale))
    x = np.random.default_rng(0).uniform(size=(8, 16, 16, 3)).astype("float32")
    y = keras.ops.one_hot(np.arange(8) % 10, 10)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    decayed = before * (1 - 1e-4 * 0.5)  # at the model's lr: before * (1 - 1e-2 * 0.5)
    adam_step = abs(float(keras.ops.convert_to_numpy(scale)) - decayed)
    assert 0.0 < adam_step <= 1e-4 * 1.001


# --- pipeline -----------------------------------------------------------------


def batches(config, initial_epoch=0):
    data = load_split(config, "train")
    return [(x, y) for x, y in train_dataset(data, config, initial_epoch).as_numpy_iterator()]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_pipeline_is_repeatable_resumable_and_independent_of_workers(tmp_path):
    config = tiny_config(tmp_path, epochs=3, mix_prob=1.0, data_workers=2)
    full = batches(config)
    steps = len(full) // 3
    assert same(full, batches(config))
    assert same(full, batches(dataclasses.replace(config, data_workers=3)))
    assert same(full[steps:], batches(config, initial_epoch=1))
    assert not same(full, batches(dataclasses.replace(config, seed=1)))
    x, y = full[0]
    assert x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)  # mixed labels still sum to 1
    assert (y.max(axis=1) < 1.0).any()  # mix_prob=1: labels are mixed


def test_repeated_augmentation_visits_every_example_that_many_times(tmp_path):
    config = tiny_config(
        tmp_path, epochs=1, warmup_epochs=0, repeated_augmentation=3, batch_size=16,
        crop_padding=0, horizontal_flip=False, random_erasing=0.0, mix_prob=0.0, normalize=False,
    )
    data = load_split(config, "train")
    seen = np.concatenate([x for x, _ in batches(config)])
    matches = [int(np.argmin(((data.images / 255.0 - image) ** 2).sum(axis=(1, 2, 3)))) for image in seen]
    counts = np.bincount(matches, minlength=len(data))
    assert len(seen) == 3 * 48 and (counts == 3).all()


# --- end to end ---------------------------------------------------------------


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.large
def test_end_to_end_run_writes_the_run_folder(tmp_path):
    config = tiny_config(tmp_path / "run", export=True)  # torch: through a TensorFlow subprocess
    metrics = train(config, verbose=0)
    names = set(os.listdir(config.workdir))
    assert {"config.json", "log.csv", "tensorboard", "best.keras", "last.keras", "backup", "metrics.json"} <= names
    assert read_json(os.path.join(config.workdir, "metrics.json"))["final_top1"] == metrics["final_top1"]
    assert 0.0 <= metrics["best_top1"] <= 1.0 and metrics["best_epoch"] in (1, 2)
    saved = TrainConfig.from_json(open(os.path.join(config.workdir, "config.json")).read())
    assert saved == resolve_data_settings(config, load_split(config, "train"))  # statistics recorded as used
    with open(os.path.join(config.workdir, "log.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + config.epochs
    reloaded = keras.saving.load_model(os.path.join(config.workdir, "last.keras"))
    images = load_split(config, "test").images[:4]
    import tensorflow as tf

    # The export serves raw uint8 images with the pipeline's normalisation inside.
    assert metrics["export"] == os.path.join(config.workdir, "saved_model")
    serving = tf.saved_model.load(metrics["export"])
    mean, std = np.asarray(saved.normalization_mean), np.asarray(saved.normalization_std)
    expected = keras.ops.softmax(reloaded(((images / 255.0 - mean) / std).astype("float32")))
    probabilities = serving.signatures["serving_default"](images=tf.constant(images))["probabilities"]
    np.testing.assert_allclose(probabilities.numpy(), keras.ops.convert_to_numpy(expected), atol=1e-5)
    assert not [n for n in names if ".partial" in n or ".old" in n]
    check_the_trained_model_knows_how_to_be_used(config, saved, serving, tmp_path)


def serve(serving, images):
    outputs = serving.signatures["serving_default"](images=images)
    return outputs["probabilities"].numpy(), outputs["top_k_classes"].numpy().astype(str)


def check_the_trained_model_knows_how_to_be_used(config, saved, serving, tmp_path):
    """From a finished run to predictions on new image files, with no side
    file: the saved models carry their preprocessing and class names, the
    export CLI on `best.keras` serves what the run's own SavedModel serves,
    an older `.keras` file exports correctly through its run's config.json
    (and is refused without it), and `predict_images` / the predict CLI
    give the served probabilities on files of other sizes."""
    import shutil
    import zipfile

    import tensorflow as tf

    from keras_smallvit.export.__main__ import main as export_main
    from keras_smallvit.models.preset_folder import run_preprocessing
    from training.predict import main as predict_main

    digits = [str(i) for i in range(10)]
    expected_preprocessing = {**run_preprocessing(json.loads(saved.to_json())), "resize": "squash"}
    for name in ("best.keras", "last.keras"):
        model = keras.saving.load_model(os.path.join(config.workdir, name))
        assert model.class_names == digits, name
        assert model.preprocessing["mean"] == list(saved.normalization_mean), name
        assert model.preprocessing == expected_preprocessing, name
    assert read_json(os.path.join(config.workdir, "metrics.json"))["class_names"] == digits

    # New images as a user has them: PNG files of other sizes (real digits, enlarged 3x and 2x).
    photos = tmp_path / "photos"
    os.makedirs(photos / "nested")
    raw = load_split(dataclasses.replace(config, image_size=None, max_test_examples=3), "test").images
    files = [str(photos / "a.png"), str(photos / "b.png"), str(photos / "nested" / "c.png")]
    for path, image, factor in zip(files, raw, (3, 2, 3)):
        tf.io.write_file(path, tf.io.encode_png(np.repeat(np.repeat(image, factor, 0), factor, 1)))
    sizes = {tf.io.decode_png(tf.io.read_file(p)).shape[0] for p in files}
    assert sizes == {3 * raw.shape[1], 2 * raw.shape[1]}  # none at the model's size (16)
    served = [serve(serving, tf.io.decode_png(tf.io.read_file(p))[None]) for p in files]
    served_probabilities = np.concatenate([p for p, _ in served])
    last = keras.saving.load_model(os.path.join(config.workdir, "last.keras"))

    # The export CLI on a copied last.keras alone (no flags): the run's own SavedModel (the
    # run exports its final weights, those of last.keras) on the same files.
    for_export = tmp_path / "copied"
    os.makedirs(for_export)
    shutil.copy(os.path.join(config.workdir, "last.keras"), for_export / "model.keras")
    export_main([str(for_export / "model.keras"), str(tmp_path / "cli_export")])
    cli_serving = tf.saved_model.load(str(tmp_path / "cli_export"))
    for path, (probabilities, classes) in zip(files, served):
        got, got_classes = serve(cli_serving, tf.io.decode_png(tf.io.read_file(path))[None])
        np.testing.assert_allclose(got, probabilities, atol=1e-6)
        assert got_classes.tolist() == classes.tolist() and set(classes[0]) <= set(digits)

    # An older .keras file (no preprocessing, no class names in its config)...
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(os.path.join(config.workdir, "last.keras")) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "config.json":
                model_config = json.loads(content)
                for key in ("preprocessing", "class_names"):
                    del model_config["config"][key]
                content = json.dumps(model_config)
            target.writestr(item, content)
    assert keras.saving.load_model(str(old)).preprocessing is None
    # ...is refused alone (it would serve x / 255 to a normalised model), with nothing written...
    alone = tmp_path / "alone"
    os.makedirs(alone)
    shutil.copy(old, alone / "model.keras")
    with pytest.raises(SystemExit, match="carries no preprocessing.*--scale, --mean and --std"):
        export_main([str(alone / "model.keras"), str(tmp_path / "refused")])
    assert not os.path.exists(tmp_path / "refused")
    # ...and exported correctly beside its run's config.json.
    in_run = tmp_path / "old_run"
    os.makedirs(in_run)
    shutil.copy(os.path.join(config.workdir, "config.json"), in_run / "config.json")
    shutil.copy(old, in_run / "best.keras")
    export_main([str(in_run / "best.keras"), str(tmp_path / "old_export")])
    old_serving = tf.saved_model.load(str(tmp_path / "old_export"))
    got = np.concatenate([serve(old_serving, tf.io.decode_png(tf.io.read_file(p))[None])[0] for p in files])
    np.testing.assert_allclose(got, served_probabilities, atol=1e-6)

    # predict_images on the folder (nested file included), and on arrays, equal the served model.
    predictions = last.predict_images([str(photos)], top_k=3)
    assert predictions.sources == sorted(files)  # a.png, b.png, nested/c.png
    np.testing.assert_allclose(predictions.probabilities, served_probabilities, atol=1e-5)
    arrays = [tf.io.decode_png(tf.io.read_file(p)).numpy() for p in files]
    np.testing.assert_allclose(last.predict_images(arrays).probabilities, served_probabilities, atol=1e-5)
    assert [row[0] for row in predictions.top_k_classes] == [digits[i] for i in served_probabilities.argmax(-1)]

    # The predict CLI on last.keras: prints, writes CSV and JSON, refuses to overwrite them.
    out = tmp_path / "predictions"
    last_file = os.path.join(config.workdir, "last.keras")
    cli = predict_main([last_file, files[0], str(photos / "nested"), "--top-k", "2", "--out", str(out)])
    np.testing.assert_allclose(cli.probabilities, served_probabilities[[0, 2]], atol=1e-5)
    rows = read_json(str(out / "predictions.json"))
    assert [r["source"] for r in rows] == [files[0], files[2]] and len(rows[0]["top_k"]) == 2
    top = np.sort(served_probabilities[[0, 2]], axis=-1)[:, ::-1][:, :2]
    np.testing.assert_allclose([[c["probability"] for c in r["top_k"]] for r in rows], top, atol=1e-5)
    with open(out / "predictions.csv") as f:
        lines = f.read().strip().splitlines()
    assert lines[0] == "source,class_1,probability_1,class_2,probability_2" and len(lines) == 3
    assert lines[1].split(",")[1] == rows[0]["top_k"][0]["class"]
    with pytest.raises(SystemExit, match="--overwrite"):
        predict_main([last_file, files[0], "--out", str(out)])
    # The run folder itself predicts with its best.keras (from_preset), the same preprocessing.
    best = keras.saving.load_model(os.path.join(config.workdir, "best.keras"))
    by_run = predict_main([config.workdir, str(photos), "--out", str(tmp_path / "by_run")])
    np.testing.assert_allclose(by_run.probabilities, best.predict_images(files).probabilities, atol=1e-6)


@pytest.mark.large
def test_crashed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "uninterrupted", epochs=3, drop_path_rate=0.1)
    expected = train(config, verbose=0)

    resumed = dataclasses.replace(config, workdir=str(tmp_path / "resumed"))
    import keras_smallvit.training.runner as runner

    original = runner.RunFolder

    class CrashingRunFolder(original):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)  # the backup of epoch 2 is written...
            if epoch + 1 == 2:
                raise KeyboardInterrupt("simulated crash")  # ...then the process dies

    monkeypatch.setattr(runner, "RunFolder", CrashingRunFolder)
    with pytest.raises(KeyboardInterrupt):
        train(resumed, verbose=0)
    assert read_json(os.path.join(resumed.workdir, "backup", "state.json"))["epoch"] == 2
    monkeypatch.setattr(runner, "RunFolder", original)
    got = train(resumed, verbose=0)
    for key in ("final_top1", "final_top5", "best_top1", "best_epoch"):
        assert got[key] == expected[key], key
    assert_same_saved_weights(config.workdir, resumed.workdir)


@pytest.mark.large
@pytest.mark.skipif(BACKEND != "tensorflow", reason="one backend is enough for the subprocess SIGKILL test (slow: "
                    "TensorFlow 40 s, torch 62 s, JAX 71 s here)")
def test_sigkilled_cli_run_resumes_with_the_same_command(tmp_path):
    args = [
        sys.executable, "-m", "training.train", "--smoke", "--epochs", "3", "--image-size", "16",
        "--set", "augmentation=none", "--set", "model.depth=1", "--set", "model.hidden_dim=16",
        "--set", "model.num_heads=2", "--set", "model.head_dim=8", "--set", "max_train_examples=48",
        "--jit-compile", "false", "--no-export",
    ]
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    from training.train import main

    main(args[3:] + ["--workdir", str(tmp_path / "a")])  # the reference: the same command, in this process
    workdir = tmp_path / "b"
    process = subprocess.Popen(args + ["--workdir", str(workdir)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = workdir / "backup" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.kill()  # SIGKILL, mid-run
    code = process.wait()
    assert code == -signal.SIGKILL, f"the run ended before the kill (exit code {code})"
    resumed = subprocess.run(args + ["--workdir", str(workdir)], cwd=REPO, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    expected, got = read_json(tmp_path / "a" / "metrics.json"), read_json(workdir / "metrics.json")
    for key in ("final_top1", "final_top5", "best_top1", "best_epoch"):
        assert got[key] == expected[key], key


@pytest.mark.large
def test_mocked_tfds_cifar10_end_to_end(tmp_path):
    import tensorflow_datasets as tfds

    config = tiny_config(tmp_path / "run", dataset="cifar10", image_size=None, max_train_examples=32,
                         max_test_examples=16, epochs=1, warmup_epochs=0)
    with tfds.testing.mock_data(num_examples=32):
        metrics = train(config, verbose=0)
    assert metrics["dataset"] == "cifar10" and 0.0 <= metrics["final_top1"] <= 1.0


def test_missing_dataset_fails_fast(tmp_path):
    config = tiny_config(tmp_path / "run", dataset="cifar100", data_dir=str(tmp_path / "empty"))
    start = time.time()
    with pytest.raises(FileNotFoundError, match="cifar100"):
        train(config, verbose=0)
    assert time.time() - start < 5


@pytest.mark.large
@pytest.mark.skipif(BACKEND == "torch", reason="data parallelism is JAX/TF only (Keras has no torch path)")
def test_distributed_smoke_run_on_two_cpu_devices(tmp_path):
    args = [
        sys.executable, "-m", "training.train", "--smoke", "--distribute", "--cpu-devices", "2",
        "--epochs", "1", "--warmup-epochs", "0", "--image-size", "16", "--set", "augmentation=none",
        "--set", "model.depth=1", "--set", "model.hidden_dim=16", "--set", "model.num_heads=2",
        "--set", "model.head_dim=8", "--jit-compile", str(FAST_FIT_JIT).lower(), "--no-export", "--workdir", str(tmp_path),
    ]
    # As from a user's shell: no TF_CPP_MIN_LOG_LEVEL (conftest.py sets one), no --verbose.
    env = {**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, "KERAS_BACKEND": BACKEND}
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert "final top-1" in result.stdout.decode()
    # A quiet console: no TensorFlow / absl / oneDNN / CUDA start-up banners or C++ log lines.
    output = result.stdout.decode() + result.stderr.decode()
    assert not FRAMEWORK_BANNER.search(output), FRAMEWORK_BANNER.search(output).group(0)
