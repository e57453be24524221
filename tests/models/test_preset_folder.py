"""`ImageClassifier.from_preset` / `save_to_preset`: registry names, preset
folders (config + weights + serving preprocessing) and the file rules (a
temporary name, then a rename; nothing the library did not write is
replaced). One tiny model, one predict per load, no fit."""

import json
import os

import numpy as np
import pytest

import keras_smallvit
from keras_smallvit.models import ImageClassifier
from tests.contract import inference

TINY = dict(depth=1, hidden_dim=16, num_heads=2, head_dim=8)
PREPROCESSING = {"scale": 1 / 255.0, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.25]}
CLASS_NAMES = ["rose", "tulip", "daisy"]


def tiny_model():
    return keras_smallvit.create_model("sl_sata_cb_vit", num_classes=3, image_size=16, **TINY)


def images():
    return np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")


def test_registry_name_gives_a_fresh_model_of_that_variant():
    model = ImageClassifier.from_preset("sl_vit", num_classes=4, image_size=16, **TINY)
    assert isinstance(model, ImageClassifier) and model.num_classes == 4
    assert model.backbone.techniques.names == ("spt", "lsa")
    with pytest.raises(ValueError, match="`num_classes`"):
        ImageClassifier.from_preset("sl_vit", image_size=16)


def test_preset_folder_round_trip_keeps_config_weights_preprocessing_and_class_names(tmp_path):
    model = tiny_model()
    model.preprocessing, model.class_names = PREPROCESSING, CLASS_NAMES
    path = str(tmp_path / "preset")
    model.save_to_preset(path)
    assert sorted(os.listdir(path)) == ["config.json", "metadata.json", "model.weights.h5", "preprocessing.json"]
    loaded = ImageClassifier.from_preset(path)
    assert type(loaded) is ImageClassifier and loaded.get_config() == model.get_config()
    assert loaded.preprocessing == {**PREPROCESSING, "resize": "squash"}
    assert loaded.class_names == CLASS_NAMES
    np.testing.assert_allclose(inference(loaded, images()), inference(model, images()), atol=1e-6)
    # Its own previous preset may be replaced; an explicit preprocessing wins over the model's.
    other = {"scale": 1.0, "mean": 0.5, "std": 0.25}
    loaded.save_to_preset(path, preprocessing=other)
    with open(os.path.join(path, "preprocessing.json")) as f:
        assert json.load(f) == {**other, "resize": "squash"}
    assert ImageClassifier.from_preset(path).preprocessing == {**other, "resize": "squash"}
    assert not any(".partial" in name or ".old" in name for name in os.listdir(tmp_path))


def test_a_run_records_its_resize_policy_with_its_preprocessing():
    from keras_smallvit.models.preset_folder import run_preprocessing
    from keras_smallvit.training import TrainConfig

    unnormalized = {"scale": 1 / 255.0, "mean": None, "std": None}
    for normalize, expected in ((True, PREPROCESSING), (False, unnormalized)):
        config = json.loads(TrainConfig(resize="crop", normalize=normalize).to_json())
        config.update(normalization_mean=PREPROCESSING["mean"], normalization_std=PREPROCESSING["std"])
        assert run_preprocessing(config) == {**expected, "resize": "crop"}
        del config["resize"]  # a run of a version before the choice: it squashed
        assert run_preprocessing(config)["resize"] == "squash"
    with pytest.raises(ValueError, match=r"'resize'.*Allowed values: 'squash', 'crop', 'pad'"):
        run_preprocessing({"resize": "bogus"})


@pytest.mark.parametrize("content", [{"scale": "x"}, {"std": [0, 0, 0]}, {"mean": [0.1, 0.2]}, ["not", "a", "dict"]])
def test_an_invalid_preprocessing_json_is_refused_naming_the_file(tmp_path, content):
    path = str(tmp_path / "preset")
    tiny_model().save_to_preset(path, preprocessing=PREPROCESSING)
    with open(os.path.join(path, "preprocessing.json"), "w") as f:
        json.dump(content, f)
    with pytest.raises(ValueError, match="preprocessing.json.*Invalid `preprocessing`"):
        ImageClassifier.from_preset(path)


def test_save_to_preset_refuses_what_the_library_did_not_write(tmp_path):
    model = tiny_model()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_text("not ours")
    with pytest.raises(FileExistsError, match="photos"):
        model.save_to_preset(str(foreign))
    assert os.listdir(foreign) == ["cat.jpg"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        model.save_to_preset(str(a_file))
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"name_or_path": "no_such_model_or_folder"}, "name_or_path"),
        ({"name_or_path": "vit", "image_size": 16}, "num_classes"),
    ],
)
def test_bad_from_preset_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}"):
        ImageClassifier.from_preset(**kwargs)


def test_bad_preprocessing_raises_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="`preprocessing`"):
        tiny_model().save_to_preset(str(tmp_path / "p"), preprocessing={"scale": 1.0, "offset": 3})
    assert not os.path.exists(tmp_path / "p")


def test_damaged_files_are_named_and_a_run_falls_back_to_its_other_checkpoint(tmp_path):
    """A damaged best.keras: the run folder loads last.keras with a warning
    (and the reverse); a truncated weights file and a broken config.json
    are named in the error (h5py and JSON name no file)."""
    model = tiny_model()
    model.preprocessing, model.class_names = PREPROCESSING, CLASS_NAMES
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "digits", "normalize": False}))
    model.save(str(run / "last.keras"))
    (run / "best.keras").write_bytes(b"not a zip: damaged")
    with pytest.warns(UserWarning, match="damaged checkpoint.*last.keras.*best.keras"):
        loaded = ImageClassifier.from_preset(str(run))
    np.testing.assert_allclose(inference(loaded, images()), inference(model, images()), atol=1e-6)
    assert loaded.class_names == CLASS_NAMES
    (run / "last.keras").write_bytes(b"")
    with pytest.raises(ValueError, match="(?s)No model of the run folder loads.*best.keras.*last.keras"):
        ImageClassifier.from_preset(str(run))

    preset = tmp_path / "preset"
    model.save_to_preset(str(preset))
    weights = preset / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ValueError, match="model.weights.h5 does not load"):
        ImageClassifier.from_preset(str(preset))
    (preset / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        ImageClassifier.from_preset(str(preset))
