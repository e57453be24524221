"""`.keras` files saved by the code before the technique spec (issue 17) load
and predict the same, and every registered variant built by name with
today's code takes their weights and gives the same logits (the fixture is
written by `tests/fixtures/make_pre_spec.py`, with the old code)."""

import json
import pathlib

import keras
import numpy as np
import pytest

import keras_smallvit
from tests.contract import inference

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "pre_spec"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
# Saved on one backend, read on all three: float32 round-off only.
ATOL = 1e-5


def images():
    return np.load(FIXTURES / "inputs.npz")["images"]


def saved_logits(case):
    return np.load(FIXTURES / f"{case}.npz")["logits"]


# Variants registered after the spec (issue 31, the papers' ablation rows):
# no file of the old code can hold them. Their layers and options are the
# old variants' (checked in tests/models/test_paper_rows.py).
ADDED_AFTER_THE_SPEC = ("l_vit", "m_vit", "s_vit", "sl_pit_no_spool", "sl_swin_no_spool", "t_vit") + (
    # The ImageNet configs (issue 28), built from the same layers with new options.
    "deit_ti", "deit_s", "deit_b", "deit_ti_distilled", "deit_s_distilled", "deit_b_distilled",
    "pit_ti", "pit_xs", "pit_s", "pit_b", "swin_t", "swin_s", "swin_b",
)


def test_the_fixture_covers_every_registered_transformer_variant():
    names = {case["name"] for case in MANIFEST["cases"].values()}
    registered = keras_smallvit.list_models()
    assert set(ADDED_AFTER_THE_SPEC) <= set(registered)
    for name in registered:
        if not name.startswith(("efficientnet", "resnet")) and name not in ADDED_AFTER_THE_SPEC:
            assert name in names


@pytest.mark.parametrize("case", sorted(MANIFEST["cases"]))
def test_old_file_and_model_built_by_name_predict_the_saved_logits(case):
    path, want = FIXTURES / f"{case}.keras", saved_logits(case)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(inference(loaded, images()), want, atol=ATOL, rtol=ATOL)
    entry = MANIFEST["cases"][case]
    built = keras_smallvit.create_model(
        entry["name"], num_classes=MANIFEST["num_classes"], image_size=MANIFEST["image_size"], **entry["overrides"]
    )
    built.load_weights(path)
    np.testing.assert_allclose(inference(built, images()), want, atol=ATOL, rtol=ATOL)
