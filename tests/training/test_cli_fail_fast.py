"""Fail fast: `python -m training.train` rejects a wrong argument or missing
data before it imports Keras, TensorFlow or a backend (in well under 3 s),
with the one-line `error:` of the full check, and writes nothing.

Each test runs its cases in one fresh Python process (this one has Keras
imported already) and reads back the messages and the imported frameworks.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch", "tensorflow_datasets")

CHILD = """
import json, sys, time
from training.train import main, parse_args, preflight

cases, valid = json.loads(sys.argv[1]), json.loads(sys.argv[2])
messages, seconds = {}, {}
for name, argv in cases.items():
    start = time.perf_counter()
    try:
        main(argv)
        messages[name] = None
    except SystemExit as exit:
        messages[name] = str(exit.code)
    seconds[name] = time.perf_counter() - start
for argv in valid:
    preflight(parse_args(argv))  # raises if a valid command is rejected
print(json.dumps({
    "messages": messages,
    "seconds": seconds,
    "frameworks": sorted(m for m in sys.modules if m.split(".")[0] in %r),
    "ours": sorted(m for m in sys.modules if m.split(".")[0] == "keras_smallvit"),
}))
""" % (set(FRAMEWORKS),)


def run_child(cases, valid=()):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cases), json.dumps(list(valid))],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_failures(report, cases, expected, tmp_path, seconds=3):
    assert report["frameworks"] == []
    for name, fragments in expected.items():
        message = report["messages"][name]
        assert message is not None and message.startswith("error: "), (name, message)
        assert "Traceback" not in message
        for fragment in fragments:
            assert fragment in message, (name, fragment, message)
        assert report["seconds"][name] < seconds, (name, report["seconds"][name])
    assert not (tmp_path / "workdirs").exists()  # nothing written
    assert set(report["messages"]) == set(cases)


def test_invalid_arguments_fail_before_the_frameworks_load(tmp_path):
    workdir = str(tmp_path / "workdirs" / "run")
    cases = {
        "lr": ["--set", "lr=abc", "--workdir", workdir],
        "nosuch": ["--set", "nosuch=1", "--workdir", workdir],
        "epochs": ["--epochs", "0", "--workdir", workdir],
        "warmup": ["--epochs", "3", "--warmup-epochs", "3", "--workdir", workdir],
        "config": ["--config", "nosuch_config", "--workdir", workdir],
        "aal": ["--teacher", "t.keras", "--workdir", workdir],
        # AAL's settings: `TrainConfig.check_fields()` reads them without Keras.
        "aal_links": ["--aal", "--teacher", "t.keras", "--set", "aal_links=gamma", "--workdir", workdir],
        "aal_decay": ["--aal", "--teacher", "t.keras", "--set", "aal_decay=1.5", "--workdir", workdir],
    }
    report = run_child(cases)
    check_failures(report, cases, {
        "lr": ["`lr` 'abc'", "Expected a number"],
        "nosuch": ["`key`: 'nosuch'", "Allowed values:", "'lr'"],
        "epochs": ["`epochs`"],
        "warmup": ["`warmup_epochs` 3", "[0, 3)"],
        "config": ["`config`: 'nosuch_config'", "digits_sl_vit"],
        "aal": ["--teacher", "`--aal`"],
        "aal_links": ["`aal_links`: 'gamma'", "'full', 'alpha', 'beta'"],
        "aal_decay": ["`aal_decay`:", "1.5", "Allowed values:"],
    }, tmp_path)


def test_wrong_models_and_techniques_fail_before_the_frameworks_load(tmp_path):
    # The presets are a data table (keras_smallvit.models.preset_table): no model class is needed.
    workdir = str(tmp_path / "workdirs" / "run")
    cases = {
        "model": ["--model", "no_such_model", "--workdir", workdir],
        "model_arg": ["--set", "model.depthh=6", "--workdir", workdir],
        "cnn_arg": ["--config", "cifar100_resnet56", "--set", "model.depth=6", "--workdir", workdir],
        "technique": ["--techniques", "spt,bogus", "--workdir", workdir],
        "cnn_techniques": ["--model", "resnet56", "--techniques", "spt", "--workdir", workdir],
        "teacher": ["--aal", "--teacher-model", "resnet5", "--workdir", workdir],
        "teacher_arg": ["--aal", "--teacher-model", "resnet56", "--set", "teacher.depthh=2", "--workdir", workdir],
        "paper_rate": ["--model", "sl_pit", "--set", "lr=none", "--set", "min_lr=2e-3", "--workdir", workdir],
    }
    report = run_child(cases)
    check_failures(report, cases, {
        "model": ["`model`: 'no_such_model'", "Allowed values:", "'sl_vit'"],
        "model_arg": ["`depthh`", "'sl_sata_cb_vit'", "Allowed:", "depth,"],
        "cnn_arg": ["`depth`", "'resnet56'", "stage_blocks", "weights"],
        "technique": ["`techniques`: 'bogus'", "'spt', 'lsa', 'sata', 'cb'"],
        "cnn_techniques": ["`techniques` ('spt',)", "'resnet56'", "CNN", "Allowed values: () or None"],
        "teacher": ["`aal_teacher_model`: 'resnet5'", "'resnet56'"],
        "teacher_arg": ["`depthh`", "'resnet56'"],
        "paper_rate": ["`min_lr` 0.002", "the paper rate of 'sl_pit'"],
    }, tmp_path, seconds=1)
    # The same one line as the full check, with the model classes (this process has Keras).
    from training.train import parse_args
    from training.train import resolve_config

    for name, argv in cases.items():
        with pytest.raises(ValueError) as error:
            resolve_config(parse_args(argv))
        assert report["messages"][name] == f"error: {error.value}", name


def test_missing_data_fails_before_the_frameworks_load(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    workdir = str(tmp_path / "workdirs" / "run")
    for name in ("cat", "dog"):  # the preflight decodes nothing
        (tmp_path / "no_test" / "train" / name).mkdir(parents=True)
        (tmp_path / "no_test" / "train" / name / "0.png").write_bytes(b"")
    (tmp_path / "one_class" / "cat").mkdir(parents=True)
    (tmp_path / "one_class" / "cat" / "0.jpg").write_bytes(b"")
    for name in ("cat", "dog"):
        (tmp_path / "empty_class" / name / "sub").mkdir(parents=True)
    (tmp_path / "empty_class" / "cat" / "sub" / "0.TIFF").write_bytes(b"")
    (tmp_path / "empty_class" / "dog" / "notes.txt").write_text("no image here")
    cases = {
        "cifar100": ["--dataset", "cifar100", "--data-dir", str(empty), "--workdir", workdir],
        "svhn": ["--config", "svhn_sl_vit", "--data-dir", str(empty), "--workdir", workdir],
        "folder": ["--dataset", f"folder:{tmp_path / 'missing'}", "--workdir", workdir],
        "folder_test": ["--dataset", f"folder:{tmp_path / 'no_test'}", "--workdir", workdir],
        "one_folder": ["--dataset", f"folder:{tmp_path / 'no_test' / 'train'}", "--workdir", workdir],
        "one_class": ["--dataset", f"folder:{tmp_path / 'one_class'}", "--validation-split", "0.2", "--workdir", workdir],
        "empty_class": ["--dataset", f"folder:{tmp_path / 'empty_class'}", "--validation-split", "0.2",
                        "--workdir", workdir],
        "tiny_imagenet": ["--dataset", "tiny_imagenet", "--data-dir", str(empty), "--workdir", workdir],
        "tiny_imagenet_none": ["--config", "tiny_imagenet_sl_vit", "--set", "data_dir=none", "--workdir", workdir],
    }
    report = run_child(cases)
    check_failures(report, cases, {
        "cifar100": ["`cifar100`", f"data_dir={str(empty)!r}", f"looked for {empty / 'cifar100'}", "tfds.load("],
        "svhn": ["`svhn_cropped`", str(empty / "svhn_cropped")],
        "folder": ["Image folder not found", str(tmp_path / "missing"), "Expected layout"],
        "folder_test": ["has train/ but no val/ or test/", "`validation_split`", "--validation-split 0.2"],
        "one_folder": ["holds one folder of classes", "`validation_split`"],
        "one_class": ["1 class folder (only 'cat')", "at least 2 classes"],
        "empty_class": ["Empty class folder", str(tmp_path / "empty_class" / "dog"), "1 non-image files inside"],
        "tiny_imagenet": ["Tiny ImageNet not found", str(empty / "wnids.txt"), "Expected layout"],
        "tiny_imagenet_none": ["`tiny_imagenet` needs `data_dir`"],
    }, tmp_path)


def test_valid_commands_pass_the_preflight_without_the_model_classes(tmp_path):
    images = tmp_path / "images"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (images / split / name).mkdir(parents=True)
            (images / split / name / "0.png").write_bytes(b"")  # the preflight decodes nothing
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    (tmp_path / "photos" / "dog" / "nested").mkdir(parents=True)
    (tmp_path / "photos" / "cat" / "0.webp").write_bytes(b"")
    (tmp_path / "photos" / "dog" / "nested" / "0.Tif").write_bytes(b"")
    tiny = tmp_path / "unpacked" / "tiny-imagenet-200"
    (tiny / "train" / "n01" / "images").mkdir(parents=True)
    (tiny / "train" / "n01" / "images" / "n01_0.JPEG").write_bytes(b"")
    (tiny / "val" / "images").mkdir(parents=True)
    (tiny / "val" / "images" / "val_0.JPEG").write_bytes(b"")
    (tiny / "wnids.txt").write_text("n01\n")
    (tiny / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t63\t63\n")
    tfds_dir = tmp_path / "tfds"
    (tfds_dir / "cifar100").mkdir(parents=True)  # what is inside is TFDS's to judge
    workdir = str(tmp_path / "workdirs" / "run")
    valid = [
        ["--config", "digits_sl_vit", "--smoke", "--workdir", workdir],
        ["--model", "resnet56", "--techniques", "", "--set", "model.weights=none", "--workdir", workdir],
        ["--model", "pit", "--techniques", "sata,cb", "--set", "model.depths=(1,1,1)", "--workdir", workdir],
        ["--dataset", f"folder:{images}", "--workdir", workdir],
        ["--dataset", f"folder:{tmp_path / 'photos'}", "--validation-split", "0.5", "--workdir", workdir],
        ["--dataset", "tiny_imagenet", "--data-dir", str(tiny.parent), "--workdir", workdir],
        ["--dataset", "cifar100", "--data-dir", str(tfds_dir), "--workdir", workdir],
        ["--dataset", "cifar100", "--data-dir", "gs://bucket/tfds", "--workdir", workdir],
    ]
    report = run_child({}, valid)
    assert report["frameworks"] == []
    # The package's `__init__`s are lazy: the preflight's modules stay imported (there used to be
    # nothing left of them, when they were imported under bare stand-ins of those `__init__`s).
    assert "keras_smallvit.training.config" in report["ours"] and "keras_smallvit.data" in report["ours"]
    assert not {"keras_smallvit.models.registry", "keras_smallvit.layers"} & set(report["ours"])
    assert not (tmp_path / "workdirs").exists()


def test_the_training_package_still_exports_everything():
    # Lazy (PEP 562), so that a config module's `TrainConfig` import needs no framework.
    from keras_smallvit import training
    from keras_smallvit.training import runner

    assert training.train is runner.train and training.pipeline.load_split is training.load_split
    assert all(hasattr(training, name) for name in training.__all__)
    assert set(training.__all__) <= set(dir(training))
    try:
        training.nosuch
    except AttributeError as error:
        assert "nosuch" in str(error)
    else:
        raise AssertionError("training.nosuch exists")


CONSOLE_CHILD = """
import json, os, sys
from training.train import parse_args, quiet_console

quiet_console(parse_args(json.loads(sys.argv[1])).verbose)
print(json.dumps({
    "level": os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
    "import_hooks": [type(f).__name__ for f in sys.meta_path if type(f).__module__ == "keras_smallvit.utils.console"],
    "frameworks": sorted(m for m in sys.modules if m.split(".")[0] in %r),
}))
""" % (set(FRAMEWORKS),)


def test_verbose_leaves_the_framework_logging_at_its_defaults():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
    reports = {}
    for name, argv in {"default": [], "verbose": ["--verbose"]}.items():
        result = subprocess.run([sys.executable, "-c", CONSOLE_CHILD, json.dumps(argv)],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        reports[name] = json.loads(result.stdout.strip().splitlines()[-1])
    # By default TensorFlow's C++ log level hides its log lines, and its first import is filtered.
    assert reports["default"] == {"level": "3", "import_hooks": ["_QuietImport"], "frameworks": []}
    assert reports["verbose"] == {"level": None, "import_hooks": [], "frameworks": []}


def test_the_import_filter_drops_only_the_banner_lines(capfd):
    from keras_smallvit.utils.console import banners_filtered

    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1796500558.036926   32737 port.cc:153] oneDNN custom operations are on.\n",
        "E0000 00:00:1796500653.630741     898 util.cc:131] oneDNN supports DT_UINT8 only on platforms with AVX-512.\n",
        "2024-01-01 12:00:00.123456: I tensorflow/core/platform/cpu_feature_guard.cc:182] This TensorFlow binary\n",
        "a real problem while importing\n",
        "F0000 00:00:1796500653.630741     898 a.cc:1] a fatal C++ error\n",
    ]
    with pytest.raises(RuntimeError):
        with banners_filtered():
            for line in lines:
                os.write(2, line.encode())
            raise RuntimeError("the import failed")  # what was written still shows
    assert capfd.readouterr().err == lines[4] + lines[5]
