"""The AAL distiller: teacher maps, gradients, fit, lambda decay, the clean student."""

import os

import keras
import numpy as np
import pytest

import keras_smallvit
from keras_smallvit import aal
from tests.aal import aal_references as ref
from tests.contract import BACKEND
from tests.contract import JIT_BACKENDS
from tests.contract import as_numpy

TINY_VIT = dict(num_classes=3, image_size=16, depth=2, hidden_dim=16, num_heads=2, head_dim=8)
TINY_TEACHER = dict(num_classes=3, image_size=16, stage_blocks=(1, 1, 1), stage_widths=(4, 8, 8), stem_width=4)


def tiny_student(**changes):
    return keras_smallvit.create_model("vit", **{**TINY_VIT, **changes})


def tiny_teacher(**changes):
    return keras_smallvit.create_model("resnet56", **{**TINY_TEACHER, **changes})


def data(n=8):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 16, 16, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(n) % 3]
    return x, y


# JAX runs un-jitted steps op by op, compiling every new op: XLA is faster there.
FIT_JIT = BACKEND == "jax"


def compile_distiller(distiller, jit_compile=FIT_JIT, lr=1e-2):
    distiller.compile(
        optimizer=keras.optimizers.AdamW(lr, weight_decay=0.05),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1")],
        jit_compile=jit_compile,
    )
    return distiller


def backend_gradients(fn, values):
    """d fn / d values for backend tensors made from NumPy `values`; zeros
    where `fn` does not depend on a value (stop_gradient, unused)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(v) for v in values]
        with tf.GradientTape() as tape:
            for x in xs:
                tape.watch(x)
            y = fn(*xs)
        grads = tape.gradient(y, xs)
    elif BACKEND == "jax":
        import jax

        # jit: un-jitted JAX compiles every op on first use (slow on CPU).
        grads = jax.jit(jax.grad(fn, argnums=tuple(range(len(values)))))(*[np.asarray(v) for v in values])
    else:
        import torch

        xs = [torch.tensor(np.asarray(v), requires_grad=True) for v in values]
        grads = torch.autograd.grad(fn(*xs), xs, allow_unused=True)
    return [np.zeros_like(v) if g is None else keras.ops.convert_to_numpy(g) for v, g in zip(values, grads)]


# --- teacher maps -----------------------------------------------------------------------


def test_teacher_layer_choices_and_blocks():
    teacher = tiny_teacher()
    chosen = aal.select_teacher_layers(teacher)  # last normalisation of every block
    assert chosen.names == ("stage1_block1_bn2", "stage2_block1_bn2", "stage3_block1_bn2")
    assert chosen.blocks == (0, 1, 2) and chosen.block_names == ("stage1", "stage2", "stage3")
    every = aal.select_teacher_layers(teacher, "normalization")
    assert every.names == teacher.normalization_output_names
    assert every.blocks == (0, 0, 0, 1, 1, 2, 2)  # the stem joins the first block
    after = aal.select_teacher_layers(teacher, "after_normalization")
    assert after.names[:2] == ("stem_relu", "stage1_block1_relu1")
    assert after.names[2] == "stage1_block1_bn2"  # feeds an Add with the shortcut: kept
    groups = aal.select_teacher_layers(teacher, [["stem_bn"], ["stage2_block1_bn1", "stage3_block1_bn2"]])
    assert groups.blocks == (0, 1, 1) and groups.block_names == ("stem_bn", "stage2_block1_bn1")
    # A plain CNN with Keras' default names: no block numbers.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(4, 3)(keras.layers.ReLU()(x))
    x = keras.layers.BatchNormalization()(x)
    plain = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    assert aal.select_teacher_layers(plain, "normalization").blocks == (0, 1)  # one block per layer
    with pytest.raises(ValueError, match="`teacher_layers`.*block numbers"):
        aal.select_teacher_layers(plain)
    for bad in ("bn", ["nope"], ["avg_pool"], []):
        with pytest.raises(ValueError, match="`teacher_layers`"):
            aal.select_teacher_layers(teacher, bad)


def test_teacher_maps_are_the_bicubically_resized_channels():
    student, teacher = tiny_student(), tiny_teacher()
    distiller = aal.AttentionLinkDistiller(student, teacher)
    x, _ = data(2)
    maps = as_numpy(distiller.teacher_maps(x))
    assert maps.shape == (2, 8, 8, 4 + 8 + 8) and distiller.grid_size == (8, 8)
    features = teacher.feature_model(distiller.teacher_layer_names)(x)
    expected = np.concatenate(
        [
            np.stack([[ref.bicubic_resize(f[b, :, :, c], (8, 8)) for c in range(f.shape[-1])] for b in range(2)])
            .transpose(0, 2, 3, 1)
            for f in (as_numpy(features[n]) for n in distiller.teacher_layer_names)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    assert distiller.output_groups == [0] * 4 + [1] * 8 + [2] * 8
    assert distiller.input_groups == [0, 0, 1, 1]


# --- gradients ----------------------------------------------------------------------------


def test_link_loss_reaches_vit_attention_and_links_but_not_the_teacher():
    student, teacher = tiny_student(), tiny_teacher()
    distiller = aal.AttentionLinkDistiller(student, teacher, links="alpha")
    x, _ = data(2)
    trainable = [as_numpy(v) for v in distiller.trainable_variables]
    non_trainable = [as_numpy(v) for v in distiller.non_trainable_variables]
    teacher_ids = {id(v) for v in teacher.weights}
    assert not teacher_ids & {id(v) for v in distiller.trainable_variables}
    teacher_positions = [i for i, v in enumerate(distiller.non_trainable_variables) if id(v) in teacher_ids]
    assert len(teacher_positions) == len(teacher.weights)

    def link_term(*values):
        tr, teacher_values = list(values[: len(trainable)]), values[len(trainable) :]
        nt = list(non_trainable)
        for i, value in zip(teacher_positions, teacher_values):
            nt[i] = value
        outputs, _ = distiller.stateless_call(tr, nt, x, training=False)
        return 2000.0 * aal.attention_link_loss(outputs["augmented_maps"], outputs["teacher_maps"])

    grads = backend_gradients(link_term, trainable + [non_trainable[i] for i in teacher_positions])
    by_path = {v.path: g for v, g in zip(distiller.trainable_variables, grads)}
    for layer in (0, 1):  # attention of every layer, q and k
        assert np.abs(by_path[f"block_{layer}/attention/qkv/kernel"]).max() > 0
    # The link loss depends on the attention maps only: not on the last MLP or the logits.
    assert np.abs(by_path["block_1/mlp_dense_2/kernel"]).max() == 0
    assert np.abs(by_path["logits/kernel"]).max() == 0
    head_grad = by_path[distiller.link_head.kernel.path]
    mask = distiller.link_head.link_mask()
    assert np.abs(head_grad[mask == 1]).min() > 0 and (head_grad[mask == 0] == 0).all()
    for grad in grads[len(trainable) :]:  # the teacher's weights
        assert np.abs(grad).max() == 0


# --- fit ------------------------------------------------------------------------------------


def test_fit_decays_lambda_freezes_the_teacher_and_keeps_masked_links_zero(tmp_path):
    student, teacher = tiny_student(), tiny_teacher()
    distiller = compile_distiller(aal.AttentionLinkDistiller(student, teacher, links="alpha"))
    assert not teacher.trainable
    teacher_before = [as_numpy(w).copy() for w in teacher.weights]  # BatchNorm statistics included
    student_before = [as_numpy(w).copy() for w in student.trainable_weights]
    x, y = data()
    history = distiller.fit(
        x, y, batch_size=8, epochs=4, verbose=0, callbacks=[aal.LinkLambdaScheduler(2000.0, "0.5@0.5,0.25")]
    ).history
    # lambda per epoch: 2000, x0.5 for the first half of the epochs, then x0.25.
    np.testing.assert_allclose(history["link_lambda"], [2000.0, 1000.0, 500.0, 125.0])
    formula = [aal.link_lambda_at(e, 2000.0, "0.5@0.5,0.25", 4) for e in range(4)]
    np.testing.assert_allclose(history["link_lambda"], formula)
    for key in ("loss", "ce_loss", "link_loss", "top1"):
        assert np.isfinite(history[key]).all(), key
    # One step per epoch: loss = CE + lambda * L_att exactly.
    total = np.add(history["ce_loss"], np.multiply(history["link_lambda"], history["link_loss"]))
    np.testing.assert_allclose(history["loss"], total, rtol=1e-5)
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(as_numpy(after), before)
    assert all(not np.allclose(as_numpy(a), b) for a, b in zip(student.trainable_weights, student_before))
    mask = distiller.link_head.link_mask()
    assert (as_numpy(distiller.link_head.kernel)[mask == 0] == 0.0).all()
    magnitudes = distiller.link_magnitudes()
    assert magnitudes.shape == (3, 2) and (magnitudes[distiller.link_matrix == 0] == 0).all()
    assert (magnitudes[distiller.link_matrix == 1] > 0).all()

    # The student alone, saved: no head, no teacher, the same predictions.
    expected = as_numpy(student(x))
    np.testing.assert_allclose(distiller.predict(x, verbose=0)["logits"], expected, atol=1e-5)
    path = os.path.join(tmp_path, "student.keras")
    student.save(path)
    reloaded = keras.saving.load_model(path)
    assert sorted(v.path for v in reloaded.weights) == sorted(v.path for v in student.weights)
    assert len(reloaded.weights) == len(tiny_student().weights)
    assert not [v for v in reloaded.weights if "link" in v.path or v.shape == distiller.link_head.kernel.shape]
    np.testing.assert_allclose(as_numpy(reloaded(x)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "policy", ["mixed_float16"] if BACKEND in JIT_BACKENDS else ["mixed_float16", "mixed_bfloat16"]
)
def test_mixed_precision_fit_with_xla(policy):
    """Mixed precision (with XLA on TF/JAX): float32 maps and loss, no NaN.
    float16 (loss scaling) on TF/JAX, where each XLA compile costs ~10 s;
    the head's contract tests both policies with XLA."""
    keras.config.set_dtype_policy(policy)
    distiller = aal.AttentionLinkDistiller(tiny_student(), tiny_teacher(), links="beta")
    compile_distiller(distiller, jit_compile=BACKEND in JIT_BACKENDS)
    x, y = data()
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values())
    outputs = distiller(x)
    assert keras.backend.standardize_dtype(outputs["augmented_maps"].dtype) == "float32"
    assert keras.backend.standardize_dtype(outputs["teacher_maps"].dtype) == "float32"


# --- other students, config, errors ---------------------------------------------------------


def test_pit_maps_of_every_stage_meet_on_the_finest_grid():
    student = keras_smallvit.create_model(
        "pit", num_classes=3, image_size=16, patch_size=2, hidden_dim=8, depths=(1, 1), num_heads=(1, 2), head_dim=4
    )
    distiller = aal.AttentionLinkDistiller(student, tiny_teacher(), links="alpha")
    assert distiller.grid_size == (8, 8) and distiller.input_groups == [0, 1, 1]
    # Shapes through the whole graph, symbolically (un-jitted JAX would compile every op).
    outputs = distiller.compute_output_spec(keras.KerasTensor((2, 16, 16, 3)))
    assert outputs["augmented_maps"].shape == (2, 8, 8, 20) and outputs["teacher_maps"].shape == (2, 8, 8, 20)


def test_config_round_trip():
    distiller = aal.AttentionLinkDistiller(
        tiny_student(), tiny_teacher(), teacher_layers="normalization", links=[[1, 0], [0, 1], [1, 1]], link_lambda=10
    )
    config = distiller.get_config()
    restored = aal.AttentionLinkDistiller.from_config(config)
    assert restored.get_config() == config
    assert restored.link_head.num_maps == distiller.link_head.num_maps == 4 + 4 + 4 + 8 + 8 + 8 + 8


def test_bad_arguments_are_clear_errors(tmp_path):
    swin = keras_smallvit.create_model(
        "swin", num_classes=3, image_size=16, patch_size=2, hidden_dim=8, depths=(2, 1), num_heads=(1, 2), window_size=4
    )
    with pytest.raises(ValueError, match="`student`.*class-token"):
        aal.AttentionLinkDistiller(swin, tiny_teacher())
    with pytest.raises(ValueError, match="`student`"):
        aal.AttentionLinkDistiller(tiny_teacher(), tiny_teacher())
    with pytest.raises(ValueError, match="`teacher`"):
        aal.AttentionLinkDistiller(tiny_student(), tiny_teacher(num_channels=1))
    with pytest.raises(ValueError, match="`links`"):
        aal.AttentionLinkDistiller(tiny_student(), tiny_teacher(), links="gamma")
    with pytest.raises(ValueError, match="`link_lambda`"):
        aal.AttentionLinkDistiller(tiny_student(), tiny_teacher(), link_lambda=-1)
    weights = os.path.join(tmp_path, "teacher.weights.h5")
    tiny_teacher().save_weights(weights)
    with pytest.raises(ValueError, match="`model`"):
        aal.load_teacher(weights)  # weights without an architecture
    with pytest.raises(ValueError, match="`model`: None for the teacher weights 'imagenet'"):
        aal.load_teacher("imagenet")  # ImageNet weights need the model to load them into
    with pytest.raises(ValueError, match="`weights`: 'imagenet' for ResNet"):
        aal.load_teacher("imagenet", tiny_teacher())  # refused before any download
    with pytest.raises(FileNotFoundError):
        aal.load_teacher(os.path.join(tmp_path, "missing.keras"))
