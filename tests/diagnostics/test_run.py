"""One tiny real training run with `diagnostics=True`, shared by the callback
and CLI tests: TensorBoard events and per-epoch JSON, then
`python -m training.figures` (in-process) on the run folder."""

import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest

from keras_smallvit.diagnostics.plots import figure_size_pixels
from keras_smallvit.training import TrainConfig
from keras_smallvit.training import smoke
from keras_smallvit.training import train
from tests.contract import FAST_FIT_JIT

TINY_VIT = {"depth": 2, "hidden_dim": 32, "num_heads": 2, "head_dim": 16}
REPORT_KEYS = {"backbone", "num_images", "histogram_edges", "layers", "class_token"}
LAYER_KEYS = {
    "index", "name", "kind", "stage", "num_heads", "num_keys", "num_rows", "num_prefix_tokens", "entropy",
    "kl_from_uniform", "normalized_entropy", "trivial", "histogram_before", "histogram_after", "temperature", "sata",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 1-epoch, 2-step digits run of a 2-block SL-ViT with SATA and CB, diagnostics on."""
    workdir = str(tmp_path_factory.mktemp("diagnostics") / "run")
    config = smoke(TrainConfig(model="sl_sata_cb_vit", dataset="digits", image_size=16, workdir=workdir))
    config = dataclasses.replace(
        config, model_overrides=dict(TINY_VIT), epochs=1, warmup_epochs=0, max_train_examples=32,
        max_test_examples=16, augmentation="none", jit_compile=FAST_FIT_JIT, export=False, diagnostics=True,
        diagnostics_images=8,
    )
    train(config, verbose=0)
    return workdir


def read_json(path):
    with open(path) as f:
        return json.load(f)


def test_config_validates_the_diagnostics_fields():
    with pytest.raises(ValueError, match="`diagnostics`"):
        TrainConfig(diagnostics="yes").validate()
    with pytest.raises(ValueError, match="`diagnostics_images`"):
        TrainConfig(diagnostics=True, diagnostics_images=0).validate()


def test_callback_writes_tensorboard_events_and_the_epoch_json(run_dir):
    events = os.path.join(run_dir, "tensorboard", "diagnostics")
    assert [n for n in os.listdir(events) if n.startswith("events.out.tfevents")]
    report = read_json(os.path.join(run_dir, "diagnostics", "epoch_001.json"))
    assert REPORT_KEYS | {"epoch", "seconds"} <= set(report)
    assert report["epoch"] == 1 and report["num_images"] == 8 and 0 < report["seconds"] < 120
    assert [layer["name"] for layer in report["layers"]] == ["block_0", "block_1"]
    for layer in report["layers"]:
        assert LAYER_KEYS <= set(layer)
        assert layer["temperature"]["learnable"] and layer["sata"]["threshold"] == 0.1
        assert layer["trivial"]["mass_after"] is not None and len(layer["entropy"]["per_head"]) == 2
    assert not [n for n in os.listdir(os.path.join(run_dir, "diagnostics")) if "partial" in n]

    import tensorflow as tf

    tags = set()
    for name in os.listdir(events):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(events, name)):
            tags |= {value.tag for value in event.summary.value}
    assert {"temperature/00_block_0", "kl_from_uniform/01_block_1", "density/00_block_0",
            "sata_scale/01_block_1", "log10_weight_before/00_block_0", "log10_weight_after/01_block_1",
            "diagnostics/seconds"} <= tags


def png_size(path):
    """(width, height) from the PNG header."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_cli_writes_figures_json_and_index(run_dir, tmp_path):
    from training import figures

    # A copy of the run whose epoch JSON also has AAL's link magnitudes (as an AAL run's would).
    aal_run = str(tmp_path / "aal_run")
    shutil.copytree(run_dir, aal_run)
    epoch_path = os.path.join(aal_run, "diagnostics", "epoch_001.json")
    epoch = read_json(epoch_path)
    epoch["aal"] = {"link_magnitudes": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], "teacher_block_names": ["s1", "s2", "s3"]}
    with open(epoch_path, "w") as f:
        json.dump(epoch, f)
    out = str(tmp_path / "inspect")
    summary = figures.main(["--run", aal_run, "--compare", run_dir, "--labels", "a,b", "--show-images", "3",
                            "--out", out])
    expected = {
        "temperature": figure_size_pixels("temperature"),
        "sharpness": figure_size_pixels("sharpness"),
        "density": figure_size_pixels("density"),
        "sata": figure_size_pixels("sata"),
        "class_token_maps": figure_size_pixels("class_token_maps", num_images=3, num_rows=4),
        "learning_curves": figure_size_pixels("learning_curves"),
        "epochs": figure_size_pixels("epochs"),
        "aal_links": figure_size_pixels("links"),
    }
    assert summary["figures"] == {name: f"{name}.png" for name in expected}
    for name, size in expected.items():
        path = os.path.join(out, f"{name}.png")
        assert os.path.getsize(path) > 2000 and png_size(path) == size, name
    assert summary["skipped"] == {}

    data = read_json(os.path.join(out, "diagnostics.json"))
    assert {"models", "images", "figures", "skipped", "epochs", "aal"} <= set(data)
    assert [m["label"] for m in data["models"]] == ["a", "b"]
    first, second = (m["report"] for m in data["models"])
    assert REPORT_KEYS <= set(first) and first["num_images"] == 16
    assert first["class_token"]["rollout_layers"] == ["block_0", "block_1"]
    np.testing.assert_allclose(first["layers"][1]["entropy"]["per_head"], second["layers"][1]["entropy"]["per_head"])
    assert data["epochs"][0]["epoch"] == 1 and data["epochs"][0]["seconds"] > 0
    index = open(os.path.join(out, "index.md")).read()
    assert all(f"]({name}.png)" in index for name in expected)
    assert data["aal"]["teacher_block_names"] == ["s1", "s2", "s3"]


def summary_logits(model_path, images):
    """The model's logits on uint8 `images` fed as the figures feed a --model file ([0, 1], as they are)."""
    model = keras.saving.load_model(model_path)
    return keras.ops.convert_to_numpy(model(images.astype("float32") / 255.0))


def test_column_titles_name_the_classes():
    from training.figures import _column_titles

    logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0]])
    assert _column_titles(logits, np.array([1, 2]), 2, ["cat", "dog", "ship"]) == [
        "label dog / pred dog", "label ship / pred cat"]
    assert _column_titles(logits, None, 1, None) == ["pred 1"]


def test_cli_on_a_model_file_and_npy_images(run_dir, tmp_path, monkeypatch):
    from keras_smallvit.diagnostics import plots
    from training import figures

    images = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "batch.npy", images)
    model = os.path.join(run_dir, "best.keras")
    titles = []
    original = plots.plot_class_token_maps
    monkeypatch.setattr(plots, "plot_class_token_maps", lambda *a, **k: titles.append(a[3]) or original(*a, **k))
    summary = figures.main(["--model", model, "--images", str(tmp_path / "batch.npy"), "--show-images", "2",
                            "--out", str(tmp_path / "out")])
    assert set(summary["figures"]) == {"temperature", "sharpness", "density", "sata", "class_token_maps"}
    assert png_size(str(tmp_path / "out" / "class_token_maps.png")) == figure_size_pixels(
        "class_token_maps", num_images=2, num_rows=2)
    assert summary["models"][0]["report"]["num_images"] == 4
    # The panels are titled with the trained model's class names (digits: "0"-"9"), its own predictions.
    predictions = np.argmax(summary_logits(model, images[:2]), axis=-1)
    assert titles == [[f"pred {keras.saving.load_model(model).class_names[p]}" for p in predictions]]
    assert {"learning_curves", "epochs", "aal_links"} <= set(summary["skipped"])
    with pytest.raises(SystemExit, match="--images"):
        figures.main(["--model", model, "--out", str(tmp_path / "none")])
