"""Folders as users have them (`folder:PATH`): layouts, formats, nested and
linked folders, a validation split held out of one folder, every unreadable
image named at once, and small data that trains."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_smallvit import data
from keras_smallvit.training import TrainConfig
from keras_smallvit.training import train
from keras_smallvit.training.pipeline import UnreadableImagesError
from keras_smallvit.training.pipeline import automatic_image_size
from keras_smallvit.training.pipeline import hold_out_validation
from keras_smallvit.training.pipeline import load_run_splits
from keras_smallvit.training.pipeline import preprocess_eval_images
from tests.contract import BACKEND
from tests.contract import FAST_FIT_JIT

DATA_ONLY = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="the data pipeline is tf.data and NumPy, identical under every KERAS_BACKEND; tested on the TensorFlow pass",
)
# Pillow's writer for each extension (and its options: lossless WebP).
FORMATS = {
    "jpg": ("JPEG", {}), "JPEG": ("JPEG", {}), "png": ("PNG", {}), "Png": ("PNG", {}), "bmp": ("BMP", {}),
    "gif": ("GIF", {}), "webp": ("WEBP", {"lossless": True}), "tif": ("TIFF", {}), "TIFF": ("TIFF", {}),
}


def write_photo(path, pixels, extension="png"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pillow_format, options = FORMATS[extension]
    Image.fromarray(pixels).save(path, format=pillow_format, **options)


def photo(label, index, size=(12, 12)):
    """A distinct image per (label, index): its class in the red channel."""
    pixels = np.zeros((*size, 3), np.uint8)
    pixels[..., 0] = 40 + 80 * label
    pixels[..., 1] = 10 * index
    pixels[..., 2] = np.arange(size[1], dtype=np.uint8)[None, :] * 8
    return pixels


def make_one_folder(root, classes=("ant", "bee", "cat"), per_class=8, size=(12, 12)):
    for label, name in enumerate(classes):
        for i in range(per_class):
            write_photo(os.path.join(root, name, f"{i:02d}.png"), photo(label, i, size))


@DATA_ONLY
def test_every_format_nested_and_linked_folders_load_and_the_rest_is_counted(tmp_path, capsys):
    root = tmp_path / "photos"
    expected = {}  # path -> the pixels Pillow reads back (what the file holds)
    for label, name in enumerate(("cats", "dogs")):
        for i, extension in enumerate(FORMATS):
            nested = "a/b/" if i % 3 == 0 else ""
            path = str(root / name / f"{nested}{i}.{extension}")
            write_photo(path, photo(label, i), extension)
            expected[path] = np.asarray(Image.open(path).convert("RGB"))
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".DS_Store").write_text("hidden")
    (root / "README.md").write_text("outside the class folders")
    outside = tmp_path / "elsewhere"
    write_photo(str(outside / "linked.png"), photo(0, 20))
    expected[str(root / "cats" / "link" / "linked.png")] = photo(0, 20)
    os.symlink(outside, root / "cats" / "link")  # followed
    os.symlink(root / "dogs", root / "dogs" / "loop")  # cut, counted

    found, info = data.split_files(f"folder:{root}", "train")
    assert sorted(found.paths) == sorted(expected)
    assert info.class_names == ("cats", "dogs") and info.num_train == len(expected)
    assert found.skipped == {"hidden": 2, "non-image files": 2, "files outside class folders": 1,
                             "repeated folders (symlink loops)": 1}
    size = photo(0, 0).shape[:2]
    images, labels, unreadable = data.read_image_files(found.paths, found.labels, size[0], "squash")
    assert unreadable == [] and len(images) == len(expected)
    for path, image, label in zip(found.paths, images, labels):
        assert label == ("dogs" in os.path.relpath(path, root).split(os.sep)[0])
        reference = expected[path]  # at the model's size: no resize
        tolerance = 12 if path.lower().endswith((".jpg", ".jpeg")) else 0  # JPEG is lossy
        assert np.abs(image.astype(int) - reference).max() <= tolerance, path


@DATA_ONLY
def test_layouts_choose_the_splits_and_refuse_contradictions(tmp_path, capsys):
    single, both = tmp_path / "single", tmp_path / "both"
    make_one_folder(str(single), per_class=2)
    for split in ("train", "val", "test"):
        make_one_folder(str(both / split), per_class=2)
    assert data.evaluation_splits(f"folder:{single}", 0.2) == ("val", "val")
    assert data.evaluation_splits(f"folder:{both}") == ("val", "test")
    assert data.evaluation_splits("digits") == ("test", "test")
    assert data.evaluation_splits("digits", 0.1) == ("val", "test")
    with pytest.raises(ValueError, match="holds one folder of classes.*`validation_split`"):
        data.evaluation_splits(f"folder:{single}")
    with pytest.raises(ValueError, match="`validation_split` 0.2: .* has a val/ folder already"):
        data.check_data(f"folder:{both}", validation_split=0.2)
    assert data.load_dataset(f"folder:{both}", "val")[1].num_test == 6
    # A train class with no folder in test/: allowed, with a warning line when loaded.
    partial = tmp_path / "partial"
    make_one_folder(str(partial / "train"), per_class=2)
    make_one_folder(str(partial / "test"), classes=("ant", "bee"), per_class=2)
    assert data.split_files(f"folder:{partial}", "test")[0].missing_classes == ("cat",)
    from keras_smallvit.training import load_split

    load_split(TrainConfig(dataset=f"folder:{partial}", image_size=12), "test")
    assert "warning: " in capsys.readouterr().out.split(f"{partial / 'test'} has no folder for class(es) 'cat'")[0]


def test_hold_out_is_stratified_seeded_and_independent_of_the_run_seed():
    labels = np.repeat(np.arange(4), [10, 5, 2, 1])
    kept, held_out = hold_out_validation(labels, 4, 0.2, seed=0)
    assert sorted(np.concatenate([kept, held_out]).tolist()) == list(range(len(labels)))
    # round(0.2 n) per class, at least one, never a whole class: 2, 1, 1, 0.
    assert np.bincount(labels[held_out], minlength=4).tolist() == [2, 1, 1, 0]
    again = hold_out_validation(labels, 4, 0.2, seed=0)
    np.testing.assert_array_equal(held_out, again[1])
    other = hold_out_validation(labels, 4, 0.2, seed=1)[1]
    assert not np.array_equal(held_out, other) and len(other) == len(held_out)


def test_automatic_image_size_rule_and_recipe_warmup(tmp_path):
    from training.train import parse_args
    from training.train import resolve_config

    make_one_folder(str(tmp_path / "photos"), per_class=1)
    # `--epochs 1` on the folder recipe: the warm-up follows the epochs (was: 10 warm-up epochs, refused).
    config = resolve_config(parse_args(["--dataset", f"folder:{tmp_path / 'photos'}", "--epochs", "1",
                                        "--validation-split", "0.5"]))
    assert (config.epochs, config.resolved_warmup_epochs(), config.validation_split) == (1, 0, 0.5)
    assert [automatic_image_size(side) for side in (5, 30, 44, 60, 240, 4000)] == [16, 32, 48, 64, 64, 64]
    assert TrainConfig(epochs=1).validate().resolved_warmup_epochs() == 0
    assert TrainConfig(epochs=100).validate().resolved_warmup_epochs() == 10
    assert TrainConfig(epochs=100, warmup_epochs=3).resolved_warmup_epochs() == 3
    with pytest.raises(ValueError, match="`validation_split`"):
        TrainConfig(validation_split=1.0).validate()


@DATA_ONLY
def test_every_unreadable_image_is_named_at_once_and_skipped_on_request(tmp_path, capsys):
    root = tmp_path / "photos"
    for split in ("train", "test"):
        make_one_folder(str(root / split), per_class=3)
    bad = [root / "train" / "ant" / "bad.jpg", root / "train" / "cat" / "deep" / "bad.tif",
           root / "test" / "bee" / "bad.png"]
    for path in bad:
        os.makedirs(path.parent, exist_ok=True)
        path.write_bytes(b"II*\x00 not a tiff" if path.suffix == ".tif" else b"not an image")
    config = TrainConfig(dataset=f"folder:{root}", image_size=12, workdir=str(tmp_path / "run"))
    with pytest.raises(UnreadableImagesError) as error:
        train(config)
    message = str(error.value)
    assert all(str(path) in message for path in bad) and "skip_unreadable_images" in message
    assert not os.path.exists(config.workdir)  # nothing written
    splits = load_run_splits(TrainConfig(**{**config.__dict__, "skip_unreadable_images": True}))
    assert [len(splits[s]) for s in ("train", "test")] == [9, 9]
    output = capsys.readouterr().out
    assert f"Found 9 images in 3 classes in {root / 'train'} (skipped: 2 unreadable images)" in output


@pytest.mark.skipif(
    BACKEND != "torch",
    reason="the folder's reading and hold-out are tf.data and NumPy, identical under every KERAS_BACKEND; its two "
    "tiny trainings run on the torch pass, the quickest to train (resume itself: tests/training/test_training.py)",
)
def test_one_folder_with_validation_split_trains_small_data_and_resumes_on_the_same_split(tmp_path, monkeypatch):
    root = str(tmp_path / "photos")
    make_one_folder(root)  # 3 classes of 8: 6 kept + 2 held out each
    config = TrainConfig(
        model="sl_vit", dataset=f"folder:{root}", validation_split=0.25, image_size=16, epochs=2,
        batch_size=512,  # larger than the data: reduced
        repeated_augmentation=1, augmentation="none", mix_prob=0.0, random_erasing=0.0,
        model_overrides={"depth": 1, "hidden_dim": 16, "num_heads": 2, "head_dim": 8},
        jit_compile=FAST_FIT_JIT, export=False, workdir=str(tmp_path / "run"),
    )
    import keras_smallvit.training.runner as runner

    original = runner.RunFolder

    class CrashingRunFolder(original):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            raise KeyboardInterrupt("simulated crash after epoch 1")

    monkeypatch.setattr(runner, "RunFolder", CrashingRunFolder)
    with pytest.raises(KeyboardInterrupt):
        train(config, verbose=0)
    monkeypatch.setattr(runner, "RunFolder", original)
    metrics = train(config, verbose=0)  # resumes epoch 2

    saved = TrainConfig.from_json(open(os.path.join(config.workdir, "config.json")).read())
    assert (saved.validation_split, saved.validation_split_seed, saved.batch_size, saved.warmup_epochs) == (
        0.25, 0, 18, 0)
    assert metrics["best_chosen_on"] == metrics["final_evaluated_on"] == "val"
    # The held-out images by an independent reading of the folder: 2 of each class.
    labels = np.repeat(np.arange(3), 8)
    _, held_out = hold_out_validation(labels, 3, 0.25, seed=0)
    assert np.bincount(labels[held_out]).tolist() == [2, 2, 2]
    pixels = np.stack([np.asarray(Image.open(os.path.join(root, name, f"{i % 8:02d}.png")).resize((16, 16)))
                       for i, name in zip(held_out, np.array(["ant", "bee", "cat"])[labels[held_out]])])
    last = keras.saving.load_model(os.path.join(config.workdir, "last.keras"))
    predicted = np.argmax(keras.ops.convert_to_numpy(last(preprocess_eval_images(pixels.astype(np.uint8), saved))), -1)
    assert metrics["final_top1"] == pytest.approx(np.mean(predicted == labels[held_out]), abs=1e-6)
    with open(os.path.join(config.workdir, "metrics.json")) as f:
        assert json.load(f)["class_names"] == ["ant", "bee", "cat"]
