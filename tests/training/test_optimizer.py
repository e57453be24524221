"""MultiRateAdamW: AdamW with per-variable learning rates (SATA's own rate),
against a NumPy implementation of the official two-optimizer recipe."""

import copy
import os
import types

import keras
import numpy as np
import pytest

from keras_smallvit.layers import TrivialAttentionSuppression
from keras_smallvit.layers.suppression import SCALE_NAME
from keras_smallvit.training import MultiRateAdamW
from keras_smallvit.training import learning_rate_schedule
from keras_smallvit.training import make_optimizer
from tests import references as ref
from tests.contract import BACKEND
from tests.contract import JIT_BACKENDS
from tests.contract import as_numpy

# ViT on CIFAR-100 (SATA paper Table 1): lr 3e-3, SATA's own lr 7e-5.
LR, SATA_LR, WD = 3e-3, 7e-5, 0.05
STEPS = 5


def schedule():
    """2 warm-up steps from 1e-4, then cosine to 1e-5 over 3 steps: a
    different learning rate at every one of the STEPS steps."""
    return learning_rate_schedule(LR, steps_per_epoch=1, epochs=STEPS, warmup_epochs=2, warmup_start_lr=1e-4, min_lr=1e-5)


def schedule_values():
    s = schedule()
    return np.array([float(as_numpy(s(t))) for t in range(STEPS)])


def official_adamw(p0, grads, lrs, weight_decay, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """torch.optim.AdamW's step in float64: decay first (`p *= 1 - lr_t * wd`),
    then Adam with bias correction. The epsilon placement is Keras's:
    keras/src/optimizers/adam.py steps by
    `lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`, i.e. epsilon is
    added to sqrt(v), not to sqrt(v_hat) as in torch (torch's formula with
    `eps_t = eps / sqrt(1 - b2^t)`); torch's default eps is 1e-8, Keras's 1e-7."""
    p = np.asarray(p0, np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = np.asarray(g, np.float64)
        p = p * (1.0 - lr * weight_decay)
        m = beta_1 * m + (1.0 - beta_1) * g
        v = beta_2 * v + (1.0 - beta_2) * g**2
        m_hat = m / (1.0 - beta_1**t)
        v_hat = v / (1.0 - beta_2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + epsilon / np.sqrt(1.0 - beta_2**t))
    return p


def sata_and_dense_variables(seed=0):
    """`[kernel, bias, sata_scale]` of a built Dense and SATA layer."""
    dense = keras.layers.Dense(3, bias_initializer="ones")
    dense.build((None, 4))
    sata = TrivialAttentionSuppression(initial_scale=0.5)
    sata.build((None, 1, 4, 4))
    return [dense.kernel, dense.bias, sata.sata_scale]


def random_gradients(variables, seed=1):
    """STEPS lists of gradients (backend tensors), of magnitudes 1e-3 to 10."""
    rng = np.random.default_rng(seed)
    return [
        [
            keras.ops.convert_to_tensor((rng.normal(size=v.shape) * 10.0 ** rng.uniform(-3, 1)).astype("float32"))
            for v in variables
        ]
        for _ in range(STEPS)
    ]


def test_sata_scale_and_other_weights_follow_the_official_two_optimizer_recipe():
    variables = sata_and_dense_variables()
    start = [as_numpy(v).astype(np.float64) for v in variables]
    grads = random_gradients(variables)
    optimizer = MultiRateAdamW(schedule(), weight_decay=WD, learning_rate_multipliers={SCALE_NAME: SATA_LR / LR})
    for step in grads:
        optimizer.apply_gradients(zip(step, variables))

    lrs = schedule_values()
    for i, (variable, p0) in enumerate(zip(variables, start)):
        own = lrs * SATA_LR / LR if variable.name == SCALE_NAME else lrs
        want = official_adamw(p0, [as_numpy(g[i]) for g in grads], own, WD)
        np.testing.assert_allclose(as_numpy(variable), want, rtol=1e-6, atol=1e-7, err_msg=variable.name)
    # Sensitive to the decay rate: decayed at the model's lr, s would be far off.
    s = as_numpy(variables[2])
    wrong_decay = official_adamw(start[2], [as_numpy(g[2]) for g in grads], lrs * SATA_LR / LR, WD * LR / SATA_LR)
    assert abs(s - wrong_decay) > 100 * 1e-6 * abs(s)


@pytest.mark.parametrize("jit_compile", [True, False] if BACKEND in JIT_BACKENDS else [False])
def test_fit_with_sata_matches_the_official_recipe(jit_compile):
    """`model.fit` (XLA on TF/JAX) on a model whose gradients do not depend on
    its weights (a loss linear in the outputs of a SATA layer and a Dense), so
    the NumPy recipe can replay the run exactly."""
    batch, threshold = 2, 0.3
    rng = np.random.default_rng(0)
    probs = ref.softmax(rng.normal(size=(batch * STEPS, 1, 5, 5)) * 3.0).astype("float32")
    x = rng.normal(size=(batch * STEPS, 4)).astype("float32")
    upstream = rng.normal(size=(batch * STEPS, 28)).astype("float32")

    attention_in, x_in = keras.Input((1, 5, 5)), keras.Input((4,))
    sata = TrivialAttentionSuppression(threshold=threshold, initial_scale=0.5)
    dense = keras.layers.Dense(3, bias_initializer="ones")
    outputs = keras.layers.Concatenate()([keras.layers.Flatten()(sata(attention_in)), dense(x_in)])
    model = keras.Model([attention_in, x_in], outputs)
    start = {v.name: as_numpy(v).astype(np.float64) for v in model.trainable_variables}
    model.compile(
        optimizer=make_optimizer(schedule(), WD, {SCALE_NAME: SATA_LR / LR}),
        loss=lambda y_true, y_pred: keras.ops.sum(y_true * y_pred, axis=-1),  # mean over the batch
        jit_compile=jit_compile,
    )
    model.fit([probs, x], upstream, batch_size=batch, epochs=1, shuffle=False, verbose=0)

    batches = [slice(b * batch, (b + 1) * batch) for b in range(STEPS)]
    grads = {
        SCALE_NAME: [ref.twist_grad(probs[b], upstream[b, :25].reshape(-1, 1, 5, 5) / batch, threshold, 0.5)[1] for b in batches],
        "kernel": [x[b].T.astype(np.float64) @ upstream[b, 25:] / batch for b in batches],
        "bias": [upstream[b, 25:].astype(np.float64).mean(0) for b in batches],
    }
    lrs = schedule_values()
    assert int(as_numpy(model.optimizer.iterations)) == STEPS
    for variable in model.trainable_variables:
        own = lrs * SATA_LR / LR if variable.name == SCALE_NAME else lrs
        want = official_adamw(start[variable.name], grads[variable.name], own, WD)
        np.testing.assert_allclose(as_numpy(variable), want, rtol=1e-6, atol=1e-7, err_msg=variable.name)


def test_without_multipliers_it_is_keras_adamw():
    ours, theirs = sata_and_dense_variables(), sata_and_dense_variables()
    for a, b in zip(ours, theirs):
        b.assign(as_numpy(a))
    start = [as_numpy(a).copy() for a in ours]
    grads = random_gradients(ours, seed=2)
    mine = MultiRateAdamW(schedule(), weight_decay=WD)
    keras_adamw = keras.optimizers.AdamW(schedule(), weight_decay=WD)
    for step in grads:
        mine.apply_gradients(zip(step, ours))
        keras_adamw.apply_gradients(zip(step, theirs))
    for a, b, a0 in zip(ours, theirs, start):
        assert not np.allclose(as_numpy(a), a0)
        if BACKEND == "torch":  # keras.optimizers.AdamW is swapped for a fused one: other rounding
            np.testing.assert_allclose(as_numpy(a), as_numpy(b), rtol=1e-6, atol=1e-8, err_msg=a.name)
        else:
            np.testing.assert_array_equal(as_numpy(a), as_numpy(b), err_msg=a.name)


def test_config_round_trip():
    optimizer = MultiRateAdamW(schedule(), weight_decay=0.1, learning_rate_multipliers={SCALE_NAME: 0.02}, beta_2=0.99)
    config = optimizer.get_config()
    assert config["weight_decay"] == 0.1 and config["learning_rate_multipliers"] == {SCALE_NAME: 0.02}
    restored = MultiRateAdamW.from_config(copy.deepcopy(config))  # (Keras's from_config edits its argument)
    assert restored.get_config() == config
    assert restored.weight_decay is None  # Keras's own decay path is not used
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, MultiRateAdamW) and restored.get_config() == config


def test_compiled_model_saves_and_loads_with_its_multipliers(tmp_path):
    def build():
        inputs = keras.Input((1, 4, 4))
        probs = keras.layers.Softmax()(keras.layers.Dense(4)(inputs))
        outputs = keras.layers.Dense(2)(keras.layers.Flatten()(TrivialAttentionSuppression(threshold=0.3)(probs)))
        return keras.Model(inputs, outputs)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 1, 4, 4)).astype("float32"), rng.normal(size=(4, 2)).astype("float32")
    model = build()
    model.compile(optimizer=make_optimizer(schedule(), WD, {SCALE_NAME: SATA_LR / LR}), loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded.optimizer, MultiRateAdamW)
    assert reloaded.optimizer.get_config() == model.optimizer.get_config()
    assert reloaded.optimizer.learning_rate_multipliers == {SCALE_NAME: SATA_LR / LR}
    assert reloaded.optimizer.decoupled_weight_decay == WD
    for a, b in zip(model.optimizer.variables, reloaded.optimizer.variables):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
    # Training on from the file is training on from memory.
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    reloaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for a, b in zip(model.trainable_variables, reloaded.trainable_variables):
        np.testing.assert_allclose(as_numpy(a), as_numpy(b), rtol=1e-6, atol=1e-7)


def test_variables_are_recognised_by_their_keras_name_on_every_backend():
    optimizer = MultiRateAdamW(1e-3, learning_rate_multipliers={SCALE_NAME: 0.5})
    # What update_step sees on TensorFlow: the backing tf.Variable, a replica under MirroredStrategy.
    for name in ("sata_scale", "block_0/attention/suppression/sata_scale:0", "suppression/sata_scale/replica_1:0"):
        assert optimizer.multiplier_for(types.SimpleNamespace(name=name)) == 0.5, name
    for name in ("kernel", "sata_scale_other", "dense/kernel:0"):
        assert optimizer.multiplier_for(types.SimpleNamespace(name=name)) == 1.0, name
    with pytest.warns(UserWarning, match="no trained variable"):
        optimizer.build([keras.Variable(np.zeros(2), name="kernel")])


@pytest.mark.parametrize(
    "multipliers",
    [{SCALE_NAME: 0.0}, {SCALE_NAME: -1.0}, {SCALE_NAME: "0.1"}, {SCALE_NAME: None}, {SCALE_NAME: True},
     {SCALE_NAME: float("nan")}, {SCALE_NAME: float("inf")}, {3: 0.1}, [SCALE_NAME], 0.1],
)
def test_bad_multipliers_raise_value_error_naming_the_argument(multipliers):
    with pytest.raises(ValueError, match="`learning_rate_multipliers`"):
        MultiRateAdamW(1e-3, learning_rate_multipliers=multipliers)


def test_bad_weight_decay_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="`weight_decay`"):
        MultiRateAdamW(1e-3, weight_decay=-0.1)
