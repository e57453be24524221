"""Data-parallel training over all local devices (backend-specific by nature).

JAX: `keras.distribution.DataParallel`; TensorFlow: `tf.distribute.MirroredStrategy`
(model and optimizer are created in its scope). The torch backend has no
in-process equivalent in Keras: launch one process per device instead.
"""

import contextlib

import keras


def local_devices():
    return keras.distribution.list_devices()


def data_parallel_scope(enabled, batch_size):
    """A context manager to create and compile the model in; a no-op when
    `enabled` is False. Checks that `batch_size` splits evenly."""
    if not enabled:
        return contextlib.nullcontext()
    backend = keras.backend.backend()
    if backend == "torch":
        raise ValueError(
            "Invalid `distribute`: True is supported on the 'jax' and 'tensorflow' backends. "
            "On torch, run one process per device (torchrun) instead."
        )
    if backend == "jax":
        devices = local_devices()
        _check_batch(batch_size, len(devices))
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext()
    import tensorflow as tf

    # MirroredStrategy() alone takes the GPUs, or one CPU: list CPUs explicitly.
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    _check_batch(batch_size, strategy.num_replicas_in_sync)
    return strategy.scope()


def _check_batch(batch_size, num_devices):
    if batch_size % num_devices:
        raise ValueError(
            f"Invalid `batch_size` {batch_size}: with `distribute` it must be a multiple of "
            f"the {num_devices} devices."
        )


def use_virtual_cpu_devices(count):
    """Splits the CPU into `count` devices so data parallelism can be tried
    without accelerators. Call before the backend first runs anything (for
    JAX, before it is imported: this sets `XLA_FLAGS`)."""
    import os

    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
    ).strip()
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
