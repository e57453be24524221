"""`training.compare_backends`: one `.keras` file on every backend, in child processes."""

import json

import keras
import numpy as np
import pytest

import keras_smallvit
from training import compare_backends

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the tool runs all three backends itself in child processes: tested once, on the TensorFlow pass",
)

TINY = ["depth=2", "hidden_dim=32", "num_heads=2", "head_dim=8"]


@pytest.mark.large
def test_same_weights_same_logits_on_every_backend(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras_smallvit.create_model(
        "sl_sata_cb_vit", num_classes=5, image_size=16, depth=2, hidden_dim=32, num_heads=2, head_dim=8
    )
    weights = tmp_path / "model.keras"
    model.save(weights)
    table = tmp_path / "table.json"
    rows = compare_backends.main(
        [
            "--weights", str(weights), "--batch-size", "4", "--steps", "2", "--jit", "auto",
            "--json", str(table), "--save-logits", str(tmp_path / "logits"),
        ]  # fmt: skip
    )
    assert [row["backend"] for row in rows] == ["tensorflow", "jax", "torch"]
    assert json.loads(table.read_text()) == rows
    for row in rows:
        # The reference: this process's own forward pass of the same file.
        assert row["max_abs_logit_diff"] < 1e-4, row
        assert row["inference_img_s"] > 0 and row["train_img_s"] > 0 and row["first_step_s"] > 0
        assert isinstance(row["jit_compile"], bool), row
    # "auto" is Keras' choice per backend: XLA on JAX (its eager first step
    # compiles every op: 16 s against 3.5 s here), eager torch, TF: XLA only
    # with an accelerator.
    jit = {row["backend"]: row["jit_compile"] for row in rows}
    assert jit["jax"] is True and jit["torch"] is False
    # Every backend's logits against this process's own forward pass of the model.
    images = np.load(tmp_path / "logits" / "images.npy")
    assert images.dtype == np.uint8 and images.shape == (8, 16, 16, 3)
    expected = keras.ops.convert_to_numpy(model(images.astype("float32") / 255.0))
    for backend in ("tensorflow", "jax", "torch"):
        np.testing.assert_allclose(np.load(tmp_path / "logits" / f"{backend}.npy"), expected, atol=1e-4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="--backends.*Allowed values: tensorflow, jax, torch"):
        compare_backends.main(["--model", "vit", "--backends", "tensorflow,mxnet", "--json", ""])
    with pytest.raises(FileNotFoundError, match="--weights"):
        compare_backends.main(["--weights", "/nonexistent/model.keras", "--json", ""])
    assert compare_backends.parse_overrides(["depth=4", "tokenizer=spt", "suppression={'threshold': 0.05}"]) == {
        "depth": 4,
        "tokenizer": "spt",
        "suppression": {"threshold": 0.05},
    }
