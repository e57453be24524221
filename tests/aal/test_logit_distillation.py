"""DeiT-style soft / hard logit distillation: the loss against NumPy, a fit
step's gradients, the frozen teacher, with AAL, the config, the CLI and a run
that saves the student alone."""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from keras_smallvit import aal
from keras_smallvit.training import TrainConfig
from keras_smallvit.training import run_guard
from tests.aal.test_aal_training import cli_args
from tests.aal.test_aal_training import teacher_weights_file
from tests.aal.test_aal_training import tiny_aal_config
from tests.aal.test_distiller import FIT_JIT
from tests.aal.test_distiller import backend_gradients
from tests.aal.test_distiller import tiny_student
from tests.aal.test_distiller import tiny_teacher
from tests.contract import as_numpy

SMOOTHING = 0.1


# --- NumPy references (float64, from the DeiT formulas) ---------------------------------


def log_softmax(z):
    z = np.asarray(z, dtype="float64")
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))


def ref_term(student, teacher, mode, tau):
    """Per example: CE(student, argmax teacher), or tau^2 KL(p_t || p_s) at tau."""
    if mode == "hard":
        return -log_softmax(student)[np.arange(len(student)), np.argmax(teacher, axis=-1)]
    log_t, log_s = log_softmax(np.asarray(teacher) / tau), log_softmax(np.asarray(student) / tau)
    return tau**2 * (np.exp(log_t) * (log_t - log_s)).sum(axis=-1)


def ref_term_gradient(student, teacher, mode, tau):
    """d term / d student logits, per example: p_s - onehot(argmax t), or tau (p_s,tau - p_t,tau)."""
    if mode == "hard":
        return softmax(student) - np.eye(student.shape[-1])[np.argmax(teacher, axis=-1)]
    return tau * (softmax(np.asarray(student) / tau) - softmax(np.asarray(teacher) / tau))


def smoothed(labels, smoothing=SMOOTHING):
    return labels * (1 - smoothing) + smoothing / labels.shape[-1]


def ref_ce(student, labels):
    return -(smoothed(labels) * log_softmax(student)).sum(axis=-1)


def ref_total(student, teacher, labels, mode, alpha, tau):
    """(1 - alpha) CE(student, labels) + alpha D, averaged over the batch."""
    return ((1 - alpha) * ref_ce(student, labels) + alpha * ref_term(student, teacher, mode, tau)).mean()


def mixed_labels(n, classes=3, seed=1):
    """Soft labels as Mixup makes them: lam * y_i + (1 - lam) * y_perm(i)."""
    rng = np.random.default_rng(seed)
    eye = np.eye(classes)
    a, b = eye[np.arange(n) % classes], eye[rng.permutation(n) % classes]
    lam = rng.uniform(0.2, 0.8, size=(n, 1))
    return (lam * a + (1 - lam) * b).astype("float32")


# --- the loss ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, tau", [("hard", 1.0), ("soft", 1.0), ("soft", 3.0)])
def test_teacher_term_and_its_gradient_match_numpy(mode, tau):
    rng = np.random.default_rng(0)
    student = (3 * rng.normal(size=(6, 5))).astype("float32")
    teacher = (3 * rng.normal(size=(6, 5))).astype("float32")
    losses = as_numpy(aal.logit_distillation_losses(student, teacher, mode, tau))
    assert losses.dtype == np.float32 and losses.shape == (6,)
    np.testing.assert_allclose(losses, ref_term(student, teacher, mode, tau), rtol=1e-5, atol=1e-6)
    # The keras.losses.Loss: reduced with sample weights like the cross-entropy.
    weights = rng.uniform(size=6).astype("float32")
    loss = aal.LogitDistillationLoss(mode, tau)
    np.testing.assert_allclose(
        as_numpy(loss(teacher, student, sample_weight=weights)),
        (ref_term(student, teacher, mode, tau) * weights).mean(), rtol=1e-5,
    )
    assert aal.LogitDistillationLoss.from_config(loss.get_config()).get_config() == loss.get_config()
    # Gradients: the closed form to the student, none to the teacher.
    grads = backend_gradients(
        lambda s, t: keras.ops.sum(aal.logit_distillation_losses(s, t, mode, tau)), [student, teacher]
    )
    np.testing.assert_allclose(grads[0], ref_term_gradient(student, teacher, mode, tau), rtol=1e-4, atol=1e-6)
    assert np.abs(grads[1]).max() == 0
    if mode == "soft":  # the teacher itself is the minimum
        np.testing.assert_allclose(as_numpy(aal.logit_distillation_losses(teacher, teacher, mode, tau)), 0, atol=1e-5)


def test_bad_arguments_name_the_argument():
    for mode, tau, match in [("medium", 1.0, "`mode`"), ("soft", 0.0, "`tau`"), ("soft", float("inf"), "`tau`")]:
        with pytest.raises(ValueError, match=match):
            aal.LogitDistillationLoss(mode, tau)
    student, teacher = tiny_student(), tiny_teacher()
    for changes, match in [
        ({"distillation": None}, "`distillation`"),
        ({"distillation": "medium"}, "`distillation`"),
        ({"distillation_alpha": 1.5}, "`distillation_alpha`"),
        ({"distillation_tau": -1.0}, "`distillation_tau`"),
    ]:
        with pytest.raises(ValueError, match=match):
            aal.LogitDistiller(student, teacher, **changes)
    with pytest.raises(ValueError, match="`teacher`.*classes"):
        aal.LogitDistiller(student, tiny_teacher(num_classes=4))
    inputs = keras.Input((16, 16, 3))
    probabilities = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ValueError, match="`teacher`.*softmax"):
        aal.LogitDistiller(student, keras.Model(inputs, probabilities))
    with pytest.raises(ValueError, match="`teacher`.*classes"):  # AAL's teacher too, with distillation
        aal.AttentionLinkDistiller(student, tiny_teacher(num_classes=4), distillation="hard")


# --- fit -----------------------------------------------------------------------------------


def one_sgd_step(distiller, x, y, lr=0.5):
    distiller.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=SMOOTHING),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1")],
        jit_compile=FIT_JIT,
    )
    return distiller.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history


@pytest.mark.parametrize("mode, alpha, tau", [("hard", 0.5, 1.0), ("soft", 0.3, 2.0)])
def test_fit_step_follows_the_numpy_loss_and_gradient_and_freezes_the_teacher(mode, alpha, tau, tmp_path):
    """One SGD step on mixed (soft) labels: the logged terms are the NumPy
    formulas, and the logits layer moves by -lr x the NumPy gradient."""
    student, teacher = tiny_student(), tiny_teacher()
    x = np.random.default_rng(0).uniform(size=(6, 16, 16, 3)).astype("float32")
    y = mixed_labels(6)
    distiller = aal.LogitDistiller(student, teacher, mode, alpha, tau)
    assert not teacher.trainable and not {id(v) for v in teacher.weights} & {id(v) for v in distiller.trainable_variables}
    features = as_numpy(keras.Model(student.inputs, student.get_layer("logits").input)(x)).astype("float64")
    s, t = as_numpy(student(x)), as_numpy(teacher(x, training=False))
    kernel, bias = (as_numpy(w).astype("float64") for w in student.get_layer("logits").weights)
    teacher_before = [as_numpy(w).copy() for w in teacher.weights]  # BatchNorm statistics included

    history = one_sgd_step(distiller, x, y)
    np.testing.assert_allclose(history["ce_loss"][0], ref_ce(s, y).mean(), rtol=1e-5)
    np.testing.assert_allclose(history["distillation_loss"][0], ref_term(s, t, mode, tau).mean(), rtol=1e-5)
    np.testing.assert_allclose(history["loss"][0], ref_total(s, t, y, mode, alpha, tau), rtol=1e-5)
    # d loss / d logits per example, averaged over the batch: (1 - alpha)(p - y_smooth) + alpha D'.
    g = ((1 - alpha) * (softmax(s) - smoothed(y)) + alpha * ref_term_gradient(s, t, mode, tau)) / len(x)
    new_kernel, new_bias = (as_numpy(w) for w in student.get_layer("logits").weights)
    np.testing.assert_allclose(new_bias, bias - 0.5 * g.sum(axis=0), atol=1e-5)
    np.testing.assert_allclose(new_kernel, kernel - 0.5 * features.T @ g, atol=1e-5)
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(as_numpy(after), before)

    config = distiller.get_config()
    assert (config["distillation"], config["distillation_alpha"], config["distillation_tau"]) == (mode, alpha, tau)
    again = aal.LogitDistiller.from_config(config)
    assert again.get_config()["distillation"] == mode and len(again.weights) == len(distiller.weights)
    # The student alone is what is kept.
    path = os.path.join(tmp_path, "student.keras")
    student.save(path)
    assert len(keras.saving.load_model(path).weights) == len(tiny_student().weights)


def test_aal_with_hard_distillation_adds_the_three_terms():
    """CE + AAL + hard: (1 - alpha) CE + alpha D + lambda L_att, one teacher pass."""
    student, teacher = tiny_student(), tiny_teacher()
    x = np.random.default_rng(2).uniform(size=(6, 16, 16, 3)).astype("float32")
    y = mixed_labels(6, seed=3)
    distiller = aal.AttentionLinkDistiller(student, teacher, links="alpha", link_lambda=10.0, distillation="hard")
    s, t = as_numpy(student(x)), as_numpy(teacher(x, training=False))
    outputs = distiller(x)
    np.testing.assert_allclose(as_numpy(outputs["teacher_logits"]), t, atol=1e-5)
    history = one_sgd_step(distiller, x, y, lr=0.0)
    np.testing.assert_allclose(history["distillation_loss"][0], ref_term(s, t, "hard", 1.0).mean(), rtol=1e-5)
    expected = ref_total(s, t, y, "hard", 0.5, 1.0) + 10.0 * history["link_loss"][0]
    np.testing.assert_allclose(history["loss"][0], expected, rtol=1e-5)
    config = distiller.get_config()
    assert config["distillation"] == "hard" and "teacher_logits" not in aal.AttentionLinkDistiller(
        tiny_student(), tiny_teacher()
    )(x)


# --- the recipe ----------------------------------------------------------------------------


def tiny_distillation_config(workdir, **changes):
    return tiny_aal_config(workdir, aal=False, distillation="hard", **changes)


def test_bad_distillation_config_names_the_field(tmp_path):
    good = tiny_distillation_config(tmp_path, aal_teacher="t.keras")
    good.validate()
    for changes, field in [
        ({"distillation": "medium"}, "distillation"),
        ({"distillation_alpha": 1.5}, "distillation_alpha"),
        ({"distillation_alpha": -0.1}, "distillation_alpha"),
        ({"distillation_tau": 0.0}, "distillation_tau"),
        ({"distillation_tau": float("inf")}, "distillation_tau"),
        ({"aal_teacher": None, "aal_teacher_model": None}, "aal_teacher"),
        ({"batch_augmentation": "device"}, "batch_augmentation"),
    ]:
        with pytest.raises(ValueError, match=f"`{field}`"):
            dataclasses.replace(good, **changes).check_fields()
    with pytest.raises(ValueError, match="With `distillation`, give a teacher"):
        dataclasses.replace(good, aal_teacher=None, aal_teacher_model=None).validate()
    dataclasses.replace(good, distillation=None, distillation_tau=-1.0).validate()  # unused without distillation
    dataclasses.replace(good, aal=True).validate()  # CE + AAL + hard
    # Old run configs (no distillation fields) load, with distillation off.
    old = json.loads(TrainConfig().to_json())
    for key in ("distillation", "distillation_alpha", "distillation_tau"):
        del old[key]
    assert TrainConfig.from_json(json.dumps(old)) == TrainConfig()
    assert TrainConfig().distillation is None
    # Distillation shapes the trajectory: a resume with another mode is refused.
    assert not {"distillation", "distillation_alpha", "distillation_tau"} & set(run_guard.SETTINGS_THAT_CANNOT_CHANGE_THE_PAST)
    from keras_smallvit.aal.recipe import teacher_run_config

    teacher = teacher_run_config(dataclasses.replace(good, aal_teacher=None))
    assert teacher.distillation is None and not teacher.uses_teacher() and teacher.model == "resnet56"


def test_cli_flags_need_their_mode(tmp_path):
    from training.train import main

    for args, match in [
        (["--teacher", "t.keras"], "--teacher`: these options need `--aal` or `--distillation`"),
        (["--distillation-alpha", "0.3", "--aal", "--teacher", "t.keras"], "need `--distillation`"),
        (["--distillation", "hard", "--teacher", "t.keras", "--aal-lambda", "1"], "need `--aal`"),
        (["--distillation", "hard", "--teacher", "t.keras", "--distillation-tau", "0"], "`distillation_tau`"),
        (["--distillation", "hard"], "`aal_teacher`: None. With `distillation`"),
    ]:
        with pytest.raises(SystemExit, match=match):
            main(args + ["--workdir", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        main(["--distillation", "medium", "--teacher", "t.keras"])  # argparse's choices


@pytest.mark.large
def test_cli_run_with_hard_distillation_saves_the_student_only(tmp_path):
    """The CLI -> runner path: the distiller trains, the logs hold its terms,
    best/last.keras hold the student alone."""
    from keras_smallvit.training import build_model
    from training.train import main

    workdir = tmp_path / "run"
    weights = teacher_weights_file(tmp_path)
    args = [a for a in cli_args(workdir, "--teacher", weights, "--teacher-model", "resnet56") if a != "--aal"]
    metrics = main(args + ["--distillation", "hard", "--distillation-alpha", "0.4", "--epochs", "1"])
    assert metrics["aal_teacher"] == weights
    config = TrainConfig.from_json(open(os.path.join(workdir, "config.json")).read())
    assert (config.aal, config.distillation, config.distillation_alpha) == (False, "hard", 0.4)
    with open(os.path.join(workdir, "log.csv")) as f:
        row = next(csv.DictReader(f))
    assert "link_loss" not in row
    for key in ("ce_loss", "distillation_loss", "val_ce_loss", "val_distillation_loss"):
        assert np.isfinite(float(row[key])), key
    # The epoch's means (two steps of 16) mix as each step's loss does.
    np.testing.assert_allclose(
        float(row["loss"]), 0.6 * float(row["ce_loss"]) + 0.4 * float(row["distillation_loss"]), rtol=1e-4
    )
    plain, _ = build_model(dataclasses.replace(config, distillation=None), 10, 16)
    assert metrics["parameters"] == plain.count_params()
    for name in ("best.keras", "last.keras"):
        model = keras.saving.load_model(os.path.join(workdir, name))
        assert sorted(v.path for v in model.weights) == sorted(v.path for v in plain.weights), name
