"""Nothing lost, nothing silently mixed: the resume check, one training per
folder, checkpoints rebuilt from the backup, errors that name the file."""

import csv
import dataclasses
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_smallvit.training import TrainConfig
from keras_smallvit.training import RunFolder
from keras_smallvit.training import load_split
from keras_smallvit.training import train
from keras_smallvit.training import run_guard
from keras_smallvit.training.runner import check_splits_agree
from tests.backend_utils import assert_same_saved_weights
from tests.backend_utils import tree_contents
from tests.contract import BACKEND
from tests.training.test_training import read_json
from tests.training.test_training import tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished 2-epoch tiny run, shared by the tests that only read it
    (each copies it before changing anything)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    config = tiny_config(workdir, epochs=2)
    train(config, verbose=0)
    return config


@pytest.mark.parametrize(
    "changes,key",
    [({"seed": 1}, "seed"), ({"lr": 0.01}, "lr"), ({"epochs": 3}, "epochs"),
     ({"model_overrides": {"depth": 2, "hidden_dim": 16, "num_heads": 2, "head_dim": 8}}, "model_overrides"),
     ({"batch_augmentation": "device"}, "batch_augmentation")],
)
def test_a_changed_command_refuses_to_resume_and_touches_nothing(finished_run, changes, key):
    before = tree_contents(finished_run.workdir)
    with pytest.raises(run_guard.RunFolderMismatch) as error:
        train(dataclasses.replace(finished_run, **changes), verbose=0)
    message = str(error.value)
    assert f"{key}:" in message and "->" in message and "--workdir" in message and "--restart" in message
    assert tree_contents(finished_run.workdir) == before


def test_settings_that_cannot_change_the_past_may_differ(finished_run):
    from keras_smallvit.training.pipeline import resolve_data_settings

    config = resolve_data_settings(finished_run, load_split(finished_run, "train"))
    assert run_guard.check_resumable(config, config.workdir)  # the same run: resumable
    relaxed = dataclasses.replace(config, data_workers=3, export=True, diagnostics=True, eval_batch_size=8)
    assert run_guard.check_resumable(relaxed, config.workdir)


def test_the_resize_policy_cannot_change_on_resume(tmp_path):
    """It shapes every image the model sees; an older run without the key squashed."""
    import json

    config = TrainConfig(workdir=str(tmp_path))
    recorded = json.loads(config.to_json())
    del recorded["resize"]
    (tmp_path / run_guard.CONFIG_FILE).write_text(json.dumps(recorded))
    assert run_guard.check_resumable(config, config.workdir)
    with pytest.raises(run_guard.RunFolderMismatch, match="resize: 'squash' -> 'pad'"):
        run_guard.check_resumable(dataclasses.replace(config, resize="pad"), config.workdir)


def test_invalid_config_and_foreign_folder_leave_everything_as_it_was(finished_run, tmp_path):
    before = tree_contents(finished_run.workdir)
    with pytest.raises(ValueError, match="`batch_size`"):
        train(dataclasses.replace(finished_run, batch_size=0), verbose=0)
    assert tree_contents(finished_run.workdir) == before
    foreign = tmp_path / "my_project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    (foreign / "log.csv").write_text("my own log")
    with pytest.raises(run_guard.RunFolderMismatch, match="notes.txt"):
        train(dataclasses.replace(finished_run, workdir=str(foreign)), verbose=0)
    assert sorted(os.listdir(foreign)) == ["log.csv", "notes.txt"] and (foreign / "log.csv").read_text() == "my own log"


def add_users_files(workdir):
    """Names a user may keep next to a run that look like the run's
    temporary names; returns their contents."""
    (workdir / "backup.old").mkdir()
    (workdir / "backup.old" / "weights.h5").write_text("my own backup")
    (workdir / "notes.partial.txt").write_text("my notes")
    (workdir / "data").mkdir()
    return tree_contents(workdir / "backup.old"), (workdir / "notes.partial.txt").read_text()


def test_restart_removes_exactly_the_files_the_run_wrote(finished_run, tmp_path):
    """The manifest a real run keeps lists what it created; `--restart`
    removes those and killed writes' temporary names of them, never a
    user's `backup.old/` or `notes.partial.txt` (it did: any `.old` or
    `.partial` of a run's name)."""
    import shutil

    from keras_smallvit.utils.files import PARTIAL_MARKER

    workdir = tmp_path / "run"
    shutil.copytree(finished_run.workdir, workdir)
    assert run_guard.read_manifest(str(workdir)) == {
        "config.json", "log.csv", "metrics.json", "best.keras", "last.keras", "backup", "tensorboard"
    }
    users_backup, notes = add_users_files(workdir)
    (workdir / "best.partial.keras").write_text("a killed write")  # a run's temporary names: removed
    (workdir / "saved_model.partial").mkdir()
    (workdir / "saved_model.partial" / PARTIAL_MARKER).write_text("")
    run_guard.clear_run_folder(str(workdir))
    assert sorted(os.listdir(workdir)) == ["backup.old", "data", "notes.partial.txt", run_guard.LOCK_FILE]
    assert tree_contents(workdir / "backup.old") == users_backup and (workdir / "notes.partial.txt").read_text() == notes


def test_restart_of_a_folder_without_manifest_is_conservative(finished_run, tmp_path):
    """A folder of an older version (no manifest): the exact run names go
    only when its config.json is a run's; else the restart is refused and
    nothing is removed."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    for name in ("log.csv", "metrics.json", "last.keras", "best.partial.keras", "notes.txt"):
        (workdir / name).write_text("x")
    (workdir / "backup").mkdir()
    (workdir / "config.json").write_text("not a TrainConfig")
    users_backup, _ = add_users_files(workdir)
    before = tree_contents(workdir)
    with pytest.raises(run_guard.RunFolderMismatch, match="backup, config.json, last.keras, log.csv, metrics.json"):
        run_guard.clear_run_folder(str(workdir))
    assert tree_contents(workdir) == before and (workdir / "backup").is_dir()
    with open(os.path.join(finished_run.workdir, "config.json")) as f:
        (workdir / "config.json").write_text(f.read())
    run_guard.clear_run_folder(str(workdir))
    assert sorted(os.listdir(workdir)) == ["backup.old", "data", "notes.partial.txt", "notes.txt"]
    assert tree_contents(workdir / "backup.old") == users_backup


def test_only_a_runs_own_temporary_names_pass_as_a_run_killed_before_its_config(finished_run, tmp_path):
    """`check_resumable` has the same notion of "ours" as the restart: a
    folder with the manifest and a killed write of config.json is a new
    run's; a user's `backup.old/` or `notes.partial.txt` is not."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.partial.json").write_text("{")
    (workdir / run_guard.MANIFEST_FILE).write_text('{"created": ["config.json"]}')
    config = dataclasses.replace(finished_run, workdir=str(workdir))
    assert run_guard.check_resumable(config, str(workdir)) is False
    (workdir / "backup.old").mkdir()
    with pytest.raises(run_guard.RunFolderMismatch, match="backup.old"):
        run_guard.check_resumable(config, str(workdir))
    (workdir / "backup.old").rmdir()
    (workdir / "notes.partial.txt").write_text("mine")
    with pytest.raises(run_guard.RunFolderMismatch, match="notes.partial.txt"):
        run_guard.check_resumable(config, str(workdir))


def test_one_training_per_folder(finished_run, tmp_path):
    workdir = str(tmp_path / "locked")
    os.makedirs(workdir)
    with run_guard.RunLock(workdir):
        with pytest.raises(run_guard.RunFolderInUse, match=f"pid {os.getpid()}"):
            run_guard.RunLock(workdir).__enter__()
        # A second training of another seed is refused before it writes anything.
        with pytest.raises(run_guard.RunFolderInUse):
            train(dataclasses.replace(finished_run, workdir=workdir, seed=5), verbose=0)
        assert os.listdir(workdir) == [run_guard.LOCK_FILE]
    with run_guard.RunLock(workdir):  # released: free again
        pass


@pytest.mark.skipif(BACKEND != "tensorflow", reason="kernel lock semantics, backend-independent: one backend is enough")
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    """`kill -9` of the process holding the lock: the next training gets the folder."""
    guard = os.path.join(os.path.dirname(run_guard.__file__), "run_guard.py")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('run_guard', {guard!r})\n"
        "guard = importlib.util.module_from_spec(spec); spec.loader.exec_module(guard)\n"
        f"lock = guard.RunLock({str(tmp_path)!r}); lock.__enter__(); print('locked', flush=True); time.sleep(60)\n"
    )], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    with pytest.raises(run_guard.RunFolderInUse, match=f"pid {holder.pid}"):
        run_guard.RunLock(str(tmp_path)).__enter__()
    holder.kill()
    holder.wait()
    with run_guard.RunLock(str(tmp_path)):
        pass


# --- checkpoints rebuilt from the backup; damaged files named ---------------------


def tiny_fit_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def run_two_epochs(workdir):
    """Epoch 1 is the best (val_top1 0.9), epoch 2 the last (0.1); returns
    the weights each epoch ended with."""
    model, folder, weights = tiny_fit_model(), RunFolder(str(workdir)), []
    folder.set_model(model)
    for epoch, score in enumerate((0.9, 0.1)):
        model.layers[-1].kernel.assign(np.full((3, 2), epoch + 1.0, "float32"))
        folder.on_epoch_begin(epoch)
        folder.on_epoch_end(epoch, {"val_top1": score})
        weights.append([w.copy() for w in model.get_weights()])
    return weights


def kernel_of(path):
    return keras.saving.load_model(path).layers[-1].kernel.numpy()


def read_log(workdir):
    with open(os.path.join(workdir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in row.items()} for row in rows]


@pytest.mark.large
def test_a_device_augmented_run_resumes_and_trains_as_the_host_run(finished_run, tmp_path, monkeypatch):
    """`batch_augmentation="device"` (normalisation, erasing and mixing in
    the train step): a run stopped after epoch 1 resumes, and ends with the
    weights and logged losses/metrics of the host run of the same config
    (the shared finished run: the same draws), up to float rounding;
    `last.keras` and the export are the classifier alone."""
    import tensorflow as tf

    import keras_smallvit.training.runner as runner
    from keras_smallvit.training.device_augmentation import DeviceBatchAugmentation

    config = dataclasses.replace(finished_run, workdir=str(tmp_path / "device"), batch_augmentation="device",
                                 export=True)
    original = runner.RunFolder

    class CrashingRunFolder(original):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            raise KeyboardInterrupt("simulated crash")  # after epoch 1's backup

    monkeypatch.setattr(runner, "RunFolder", CrashingRunFolder)
    with pytest.raises(KeyboardInterrupt):
        train(config, verbose=0)
    monkeypatch.setattr(runner, "RunFolder", original)
    metrics = train(config, verbose=0)
    host, device = read_log(finished_run.workdir), read_log(config.workdir)
    assert [row["epoch"] for row in device] == [1.0, 2.0]
    for host_row, device_row in zip(host, device):
        assert host_row.keys() == device_row.keys()
        for key in host_row:  # mixed-label loss and metrics, train and validation
            np.testing.assert_allclose(device_row[key], host_row[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert_same_saved_weights(finished_run.workdir, config.workdir, atol=1e-4)
    reloaded = keras.saving.load_model(os.path.join(config.workdir, "last.keras"))
    assert not isinstance(reloaded, DeviceBatchAugmentation) and reloaded.count_params() == metrics["parameters"]
    # The export serves uint8 images with the normalisation inside, as in host mode.
    with open(os.path.join(config.workdir, "config.json")) as f:
        recorded = TrainConfig.from_json(f.read())
    images = load_split(config, "test").images[:4]
    mean, std = np.asarray(recorded.normalization_mean), np.asarray(recorded.normalization_std)
    expected = keras.ops.softmax(reloaded(((images / 255.0 - mean) / std).astype("float32")))
    serving = tf.saved_model.load(metrics["export"]).signatures["serving_default"]
    np.testing.assert_allclose(serving(images=tf.constant(images))["probabilities"].numpy(),
                               keras.ops.convert_to_numpy(expected), atol=1e-5)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_lost_best_and_last_checkpoints_are_rebuilt_from_the_backup(tmp_path, damage):
    best_weights, last_weights = run_two_epochs(tmp_path)
    for name in ("best.keras", "last.keras"):
        path = tmp_path / name
        if damage == "deleted":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    model = tiny_fit_model()
    assert RunFolder(str(tmp_path)).restore(model) == 2
    np.testing.assert_array_equal(kernel_of(tmp_path / "best.keras"), best_weights[0])  # epoch 1's
    np.testing.assert_array_equal(kernel_of(tmp_path / "last.keras"), last_weights[0])
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(), last_weights[0])  # the resume goes on from the last


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_lost_log_is_rebuilt_from_the_backup_on_resume(tmp_path, damage):
    run_two_epochs(tmp_path)
    log = tmp_path / "log.csv"
    original = log.read_bytes()
    assert len(read_log(tmp_path)) == 2
    if damage == "deleted":
        log.unlink()
    else:
        log.write_bytes(original[: original.index(b"\r\n2,") + 2])  # epoch 2's row cut
    assert RunFolder(str(tmp_path)).restore(tiny_fit_model()) == 2
    assert log.read_bytes() == original


def fail_writes_to(monkeypatch, name):
    """`os.replace` onto a path ending in `name` fails as on a full disk."""
    import errno

    replace = os.replace

    def full_disk(source, destination):
        if str(destination).endswith(name):
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(source, destination)

    monkeypatch.setattr(os, "replace", full_disk)


def test_a_full_disk_names_the_path_and_the_free_space_and_the_run_resumes(tmp_path, monkeypatch):
    import errno

    from keras_smallvit.utils.files import WriteError

    model, folder = tiny_fit_model(), RunFolder(str(tmp_path))
    folder.set_model(model)
    folder.on_epoch_begin(0)
    folder.on_epoch_end(0, {"val_top1": 0.5})
    fail_writes_to(monkeypatch, "log.csv")
    folder.on_epoch_begin(1)
    with pytest.raises(OSError) as error:
        folder.on_epoch_end(1, {"val_top1": 0.2})
    path = str(tmp_path / "log.csv")
    assert isinstance(error.value, WriteError) and error.value.errno == errno.ENOSPC and error.value.disk_full
    message = str(error.value)
    assert message.startswith(f"Cannot write {path}: No space left on device") and " free of " in message
    assert isinstance(error.value.__cause__, OSError) and error.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    assert RunFolder(str(tmp_path)).restore(tiny_fit_model()) == 1  # epoch 2 not committed: it is run again
    assert len(read_log(tmp_path)) == 1


def test_a_failed_write_keeps_its_builtin_type_and_the_cli_prints_one_line(tmp_path, monkeypatch):
    import errno

    import keras_smallvit.training
    from keras_smallvit.utils.files import WriteError
    from keras_smallvit.utils.files import write_text_atomically
    from training.train import main

    def read_only(source, destination):
        raise PermissionError(errno.EACCES, "Permission denied", source)

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(PermissionError, match="Cannot write .*a.json: Permission denied .* free of ") as error:
        write_text_atomically(str(tmp_path / "a.json"), "{}")
    assert isinstance(error.value, WriteError) and error.value.errno == errno.EACCES and not error.value.disk_full
    monkeypatch.undo()

    def train_on_a_full_disk(config, restart=False):
        fail_writes_to(monkeypatch, "metrics.json")
        write_text_atomically(os.path.join(config.workdir, "metrics.json"), "{}")

    monkeypatch.setattr(keras_smallvit.training, "train", train_on_a_full_disk)
    workdir = tmp_path / "run"
    workdir.mkdir()
    with pytest.raises(SystemExit) as exit:
        main(["--model", "vit", "--dataset", "digits", "--image-size", "16", "--workdir", str(workdir)])
    message = str(exit.value.code)
    assert message.startswith(f"error: Cannot write {workdir / 'metrics.json'}: No space left on device")
    assert " free of " in message and "\n" not in message


@pytest.mark.large
def test_a_resume_on_a_full_disk_says_so_and_rebuilds_a_deleted_log(finished_run, tmp_path, monkeypatch):
    """The real resume: the log rebuilt from the backup; a full disk when
    writing metrics.json is named with the way on, and the same command then
    ends with the same metrics."""
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(finished_run.workdir, workdir)
    config = dataclasses.replace(finished_run, workdir=str(workdir))
    original_log = (workdir / "log.csv").read_bytes()
    metrics = read_json(workdir / "metrics.json")
    (workdir / "log.csv").unlink()
    (workdir / "metrics.json").unlink()
    fail_writes_to(monkeypatch, "metrics.json")
    with pytest.raises(OSError, match=r"metrics.json: No space left on device .* free of .*same command resumes"):
        train(config, verbose=0)
    assert (workdir / "log.csv").read_bytes() == original_log
    monkeypatch.undo()
    resumed = train(config, verbose=0)
    assert resumed == read_json(workdir / "metrics.json")
    metrics.pop("train_images_per_second"), resumed.pop("train_images_per_second")  # no epoch was run
    assert resumed == metrics


def test_a_damaged_backup_names_the_file(tmp_path):
    run_two_epochs(tmp_path)
    weights = tmp_path / "backup" / "epoch_2.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="epoch_2.weights.h5.*--restart"):
        RunFolder(str(tmp_path)).restore(tiny_fit_model())
    (tmp_path / "backup" / "state.json").write_text('{"epoch": 2, "weigh')
    with pytest.raises(ValueError, match="state.json.*--restart"):
        RunFolder(str(tmp_path)).restore(tiny_fit_model())


def test_a_corrupt_image_is_named_and_mismatched_splits_fail_before_training(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in range(2):
            os.makedirs(tmp_path / "images" / split / f"c{c}")
            for i in range(3):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "images" / split / f"c{c}" / f"{i}.png")
    bad = tmp_path / "images" / "train" / "c1" / "1.png"
    bad.write_bytes(bad.read_bytes()[:20])
    config = TrainConfig(dataset=f"folder:{tmp_path / 'images'}", image_size=8)
    with pytest.raises(ValueError, match="1.png"):
        load_split(config, "train")
    from keras_smallvit.training.pipeline import InMemoryData

    train_split = InMemoryData(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.int32), 2)
    with pytest.raises(ValueError, match="differ in image shape"):
        check_splits_agree(config, {"train": train_split, "test": InMemoryData(np.zeros((4, 9, 9, 3), np.uint8),
                                                                             np.zeros(4, np.int32), 2)})


def test_cli_errors_are_one_line_without_traceback(finished_run, tmp_path):
    from training.train import main

    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    start = time.time()
    with pytest.raises(SystemExit, match="error: .*keep.txt"):
        main(["--model", "vit", "--dataset", "digits", "--image-size", "16", "--workdir", str(foreign)])
    assert time.time() - start < 30


def test_from_preset_reads_a_finished_run_folder_and_touches_nothing(finished_run, tmp_path):
    """A run folder is a preset: `best.keras` and the preprocessing its
    config records (no extra training: the shared finished run)."""
    from keras_smallvit.models import ImageClassifier
    from keras_smallvit.training.pipeline import normalization

    before = tree_contents(finished_run.workdir)
    model = ImageClassifier.from_preset(finished_run.workdir)
    best = keras.saving.load_model(os.path.join(finished_run.workdir, "best.keras"))
    for got, want in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(got, want)
    with open(os.path.join(finished_run.workdir, "config.json")) as f:
        recorded = TrainConfig.from_json(f.read())
    mean, std = normalization(recorded)
    expected = {"scale": 1 / 255.0, "mean": None, "std": None}
    if recorded.normalize:
        expected.update(mean=[float(v) for v in mean], std=[float(v) for v in std])
    assert model.preprocessing["scale"] == expected["scale"]
    for key in ("mean", "std"):
        assert (model.preprocessing[key] is None) == (expected[key] is None)
        if expected[key] is not None:
            np.testing.assert_allclose(model.preprocessing[key], expected[key], rtol=1e-6)
    # The run folder is not a preset folder the library may overwrite.
    with pytest.raises(FileExistsError, match="Refusing to replace"):
        model.save_to_preset(finished_run.workdir)
    assert tree_contents(finished_run.workdir) == before
    model.save_to_preset(str(tmp_path / "shared"))
    assert ImageClassifier.from_preset(str(tmp_path / "shared")).preprocessing == model.preprocessing


# --- a diverging run stops with an error and keeps the last finite epoch -------------


def finite_weights(path):
    model = keras.saving.load_model(path)
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


def test_run_folder_never_saves_an_epoch_with_non_finite_weights(tmp_path):
    from keras_smallvit.training import TrainingDiverged

    model, folder = tiny_fit_model(), RunFolder(str(tmp_path))
    folder.set_model(model)
    folder.on_epoch_begin(0)
    folder.on_epoch_end(0, {"val_top1": 0.2})  # epoch 1: finite
    saved = {name: (tmp_path / name).read_bytes() for name in ("best.keras", "last.keras", "log.csv")}
    state = (tmp_path / "backup" / "state.json").read_text()
    kernel = model.layers[-1].kernel
    kernel.assign(np.where(np.eye(3, 2) > 0, np.nan, 1.0).astype("float32"))
    folder.on_epoch_begin(1)
    with pytest.raises(TrainingDiverged, match=r"weights are non-finite .* end of epoch 2.*keeps epoch 1") as error:
        folder.on_epoch_end(1, {"val_top1": 0.9})  # a better score: still not saved
    assert (error.value.epoch, error.value.step, error.value.source, error.value.backup_epoch) == (2, None, "weights", 1)
    # Nothing of epoch 2 was written: checkpoints, log and backup are epoch 1's.
    assert {name: (tmp_path / name).read_bytes() for name in saved} == saved
    assert (tmp_path / "backup" / "state.json").read_text() == state
    assert sorted(os.listdir(tmp_path / "backup")) == ["best_epoch_1.weights.h5", "epoch_1.weights.h5", "state.json"]
    assert finite_weights(tmp_path / "best.keras") and finite_weights(tmp_path / "last.keras")
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics == {"diverged": {"epoch": 2, "step": None, "source": "weights", "loss": None, "backup_epoch": 1}}


def test_stop_on_divergence_names_the_step_and_allows_skipped_steps_under_loss_scaling(tmp_path):
    from keras_smallvit.training import StopOnDivergence
    from keras_smallvit.training import TrainingDiverged

    def run(callback, losses, epoch=0):
        callback.on_epoch_begin(epoch)
        for step, loss in enumerate(losses):
            callback.on_train_batch_end(step, {"loss": np.float32(loss)})

    plain = StopOnDivergence(str(tmp_path))
    plain.set_model(tiny_fit_model())
    assert plain.allowed_nonfinite_steps() == 0
    run(plain, [2.0, 1.5])
    with pytest.raises(TrainingDiverged, match=r"loss is inf at step 3 of epoch 2\. .*learning rate too high.*mixed_float16"):
        run(plain, [1.0, 0.5, np.inf, 0.4], epoch=1)
    assert read_json(tmp_path / "metrics.json")["diverged"] == {
        "epoch": 2, "step": 3, "source": "loss", "loss": "inf", "backup_epoch": None
    }
    # Finite training losses, a validation loss that overflows: stopped at the
    # epoch's end (before RunFolder, later in the list, saves it).
    plain.on_epoch_begin(2)
    for step in range(4):
        plain.on_train_batch_end(step, {"loss": 1e30})
    with pytest.raises(TrainingDiverged, match=r"validation loss is nan at the end of epoch 3, after its step 4"):
        plain.on_epoch_end(2, {"loss": 1e30, "val_loss": float("nan")})
    plain.on_epoch_end(2, {"loss": 1.0, "val_loss": 2.0})  # finite: goes on

    # Loss scaling (mixed_float16) skips non-finite steps: 50 in a row pass.
    scaled_model = tiny_fit_model()
    scaled_model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), loss="mse")
    scaled = StopOnDivergence()  # no folder: no metrics.json, no folder in the message
    scaled.set_model(scaled_model)
    assert scaled.allowed_nonfinite_steps() == 50
    run(scaled, [np.nan] * 50 + [1.0] + [np.nan] * 50)  # a finite loss resets the count
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 51 of epoch 1 \(non-finite for 51 consecutive steps\)") as error:
        run(scaled, [np.nan] * 51)
    assert "run folder" not in str(error.value)
    explicit = StopOnDivergence(max_nonfinite_steps=2)
    explicit.set_model(tiny_fit_model())
    run(explicit, [np.nan, np.nan, 1.0])
    with pytest.raises(TrainingDiverged, match="step 3 of epoch 1"):
        run(explicit, [np.nan, np.nan, np.nan])


@pytest.mark.large
def test_a_diverging_cli_run_exits_with_the_step_and_keeps_only_finite_checkpoints(tmp_path):
    # `--set lr=1000`: NaN within a few steps. Was: every epoch ran, exit 0,
    # a best top-1 in metrics.json and NaN weights in best.keras.
    from tests.contract import FAST_FIT_JIT
    from training.train import main

    workdir = tmp_path / "run"
    argv = [
        "--config", "digits_sl_vit", "--smoke", "--image-size", "16", "--workdir", str(workdir), "--no-export",
        "--set", "lr=1000", "--set", "warmup_epochs=0", "--epochs", "3", "--set", "max_train_examples=48", "--set", "max_test_examples=16",
        "--set", "model.depth=1", "--set", "model.hidden_dim=16", "--set", "model.num_heads=2",
        "--set", "model.head_dim=8", "--jit-compile", "true" if FAST_FIT_JIT else "false",
    ]
    with pytest.raises(SystemExit) as exit:
        main(argv)
    message = str(exit.value.code)
    assert message.startswith("error: Training diverged: ") and "Traceback" not in message
    diverged = read_json(workdir / "metrics.json")
    assert set(diverged) == {"diverged"}  # no best/final top-1 reported
    record = diverged["diverged"]
    assert "learning rate too high" in message
    # Where it shows first depends on the backend's arithmetic: the training
    # loss, the validation loss of finite but huge weights (StopOnDivergence),
    # or the weights after the epoch's last update (RunFolder).
    epoch, step, loss = record["epoch"], record["step"], record["loss"]
    assert step >= 1 and epoch >= 1
    expected = {
        "loss": f"the loss is {loss} at step {step} of epoch {epoch}",
        "val_loss": f"the validation loss is {loss} at the end of epoch {epoch}, after its step {step}",
        "weights": f"weights are non-finite (NaN or inf) at the end of epoch {epoch}, after its step {step}",
    }[record["source"]]
    assert expected in message
    assert (loss in ("nan", "inf", "-inf")) == (record["source"] != "weights")
    # Saved: the epochs before the diverging one, all finite; nothing after.
    kept = record["epoch"] - 1
    assert record["backup_epoch"] == (kept or None)
    for name in ("best.keras", "last.keras"):
        assert (workdir / name).exists() == bool(kept)
        if kept:
            assert finite_weights(workdir / name), name
    if kept:
        assert read_json(workdir / "backup" / "state.json")["epoch"] == kept
        assert len(read_log(workdir)) == kept
    else:
        assert not (workdir / "backup" / "state.json").exists()
