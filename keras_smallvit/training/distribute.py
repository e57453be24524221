"""Data-parallel training (backend-specific by nature).

One process (`distribute=True`): over all local devices. JAX:
`keras.distribution.DataParallel`; TensorFlow: `tf.distribute.MirroredStrategy`
(model and optimizer are created in its scope).

Several processes (hosts), JAX only: after `initialize_processes(job_addresses,
process_id)` at the start of every process (`keras.distribution.initialize`'s
work, with timeouts), `DataParallel` over the devices of all of them. Each
process feeds its rows of every global batch (`process_shard`: process `i`
of `P` takes rows `[i*B/P, (i+1)*B/P)`), so the `P` processes train on
exactly the batches of one; the gradients are all-reduced. The TensorFlow
and torch backends are refused, with the reason (`UNSUPPORTED_MULTI_PROCESS`).

Only process 0 writes (`is_writer`); the others read the run folder (a
resume loads process 0's checkpoint: a filesystem all processes share).
"""

import contextlib
import os

# Keras is imported where used: the command line checks `parse_job_addresses`
# before any framework loads.

MULTI_PROCESS_BACKENDS = ("jax",)
# Why the other backends have no multi-process `model.fit` (checked with
# Keras 3.15.1, TensorFlow 2.21, torch 2.13).
UNSUPPORTED_MULTI_PROCESS = {
    "tensorflow": (
        "Keras 3's TensorFlow trainer does not run `model.fit` under tf.distribute.MultiWorkerMirroredStrategy "
        "(its first step reduces the input batch, a nested structure that strategy cannot reduce, then its "
        "metrics fail: keras-team/keras#20585)."
    ),
    "torch": (
        "Keras' torch backend has no data-parallel path in `model.fit` (it neither wraps the model in "
        "DistributedDataParallel nor all-reduces the gradients)."
    ),
}

# A peer that dies makes the others fail within about this long (the JAX
# coordination service's heartbeat), if its collectives have not failed sooner.
HEARTBEAT_TIMEOUT_SECONDS = 60
# How long process start-up waits for all processes to join.
INITIALIZATION_TIMEOUT_SECONDS = 300


class _Cluster:
    """The processes of a multi-process run (set by `initialize_processes`)."""

    def __init__(self, job_addresses, process_id):
        self.job_addresses, self.process_id = job_addresses, process_id

    @property
    def num_processes(self):
        return len(self.job_addresses)


_cluster = None


def local_devices():
    import keras

    return keras.distribution.list_devices()


def parse_job_addresses(job_addresses, process_id):
    """Checks the cluster arguments, without any framework; returns the
    addresses as a list.

    Args:
        job_addresses: "host:port,host:port,...", one per process, process
            0's first (the coordinator): at least 2.
        process_id: this process's index in that list.
    """
    if not isinstance(job_addresses, str) or not job_addresses.strip():
        raise ValueError(
            f"Invalid `job_addresses` {job_addresses!r}: give one host:port per process, comma-separated, "
            "process 0's first (e.g. '10.0.0.1:12345,10.0.0.2:12345')."
        )
    addresses = [a.strip() for a in job_addresses.split(",")]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"Invalid `job_addresses` {job_addresses!r}: {address!r} is not host:port (a port 1-65535)."
            )
    if len(addresses) < 2:
        raise ValueError(
            f"Invalid `job_addresses` {job_addresses!r}: one address is one process; give one per process "
            "(at least 2), or leave them out for one process."
        )
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"Invalid `job_addresses` {job_addresses!r}: an address is listed twice.")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < len(addresses):
        raise ValueError(
            f"Invalid `process_id` {process_id!r}: an integer from 0 to {len(addresses) - 1} "
            f"(the {len(addresses)} processes of `job_addresses`)."
        )
    return addresses


def initialize_processes(job_addresses, process_id):
    """Joins this process to a multi-process data-parallel run; call it at
    the start of every process, before the backend runs anything (the
    command line does, for `--job-addresses`).

    Args:
        job_addresses: "host:port,..." one per process, process 0's first
            (`parse_job_addresses`). JAX listens on process 0's address
            only (the coordinator); the list's length is the process count.
        process_id: this process's index (0 writes the run folder).

    Raises:
        ValueError: bad arguments, or a backend other than JAX
            (`UNSUPPORTED_MULTI_PROCESS` says why).
    """
    global _cluster

    import keras

    addresses = parse_job_addresses(job_addresses, process_id)
    backend = keras.backend.backend()
    if backend not in MULTI_PROCESS_BACKENDS:
        raise ValueError(
            f"Invalid backend {backend!r} for `job_addresses` (multi-process training): supported on the "
            f"{', '.join(repr(b) for b in MULTI_PROCESS_BACKENDS)} backend (KERAS_BACKEND=jax). "
            + UNSUPPORTED_MULTI_PROCESS[backend]
            + " On one host, `distribute` uses all its devices on the 'jax' and 'tensorflow' backends."
        )
    if _cluster is not None:
        raise RuntimeError("initialize_processes was called already in this process.")
    import jax

    # Cross-process collectives on CPU (the default in jax 0.10; GPUs use NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # `keras.distribution.initialize`, with a bounded wait for a dead peer:
    # jax's own call (Keras' passes no timeouts). Keras' call also agrees on a
    # random seed across processes when none is set; the runner sets the
    # run's seed in every process (`keras.utils.set_random_seed`) instead.
    jax.distributed.initialize(
        coordinator_address=addresses[0],
        num_processes=len(addresses),
        process_id=process_id,
        initialization_timeout=INITIALIZATION_TIMEOUT_SECONDS,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS,
    )
    _cluster = _Cluster(addresses, process_id)


def num_processes():
    """The processes of the run (1 without `initialize_processes`)."""
    return 1 if _cluster is None else _cluster.num_processes


def process_index():
    """This process's index (0 without `initialize_processes`)."""
    return 0 if _cluster is None else _cluster.process_id


def is_writer():
    """Whether this process writes the run folder (process 0 only)."""
    return process_index() == 0


def process_shard():
    """`(index, count)` of this process's rows of each global batch, or None
    for one process."""
    return None if _cluster is None else (_cluster.process_id, _cluster.num_processes)


@contextlib.contextmanager
def writer_scope():
    """Where process 0 writes alone (checkpoints, the export). On JAX,
    without the global distribution: Keras' saving creates variables (a
    fresh optimizer's), which under it are placed on every process's
    devices, a collective the other processes would not join. Reading the
    replicated weights needs none."""
    if _cluster is None:
        yield
        return
    import keras

    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def check_multi_process_config(config):
    """Refuses, before anything is written, the settings a multi-process run
    does not support: a teacher to train first (`aal` or `distillation`
    without `aal_teacher`), `diagnostics`, and `batch_augmentation` "device"
    (its drawn mixing spans the global batch)."""
    if _cluster is None:
        return
    if config.uses_teacher() and config.aal_teacher is None:
        raise ValueError(
            "Invalid `aal_teacher` None with `job_addresses` (a multi-process run): a multi-process run does "
            "not train its teacher first. Train it (e.g. `--teacher-model` on one process), then give its "
            "file: `--teacher PATH`."
        )
    refused = [
        (config.diagnostics, "`diagnostics` True", "False"),
        (config.batch_augmentation == "device", "`batch_augmentation` 'device'", "'host'"),
    ]
    for bad, setting, allowed in refused:
        if bad:
            raise ValueError(
                f"Invalid {setting} with `job_addresses` (a multi-process run): allowed value there: {allowed}."
            )
    _check_batch(config.batch_size, num_processes(), "processes")


def data_parallel_scope(enabled, batch_size):
    """A context manager to create and compile the model in; a no-op when
    `enabled` is False and there is one process. Checks that `batch_size`
    splits evenly over the devices."""
    if not enabled and _cluster is None:
        return contextlib.nullcontext()
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        raise ValueError(
            "Invalid `distribute`: True is supported on the 'jax' and 'tensorflow' backends (KERAS_BACKEND). "
            + UNSUPPORTED_MULTI_PROCESS["torch"]
        )
    if backend == "jax":
        devices = local_devices()  # all processes' devices
        _check_batch(batch_size, len(devices))
        # Each process feeds its own rows (`process_shard`): no sharding by Keras.
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices, auto_shard_dataset=_cluster is None)
        )
        return contextlib.nullcontext()
    import tensorflow as tf

    # MirroredStrategy() alone takes the GPUs, or one CPU: list CPUs explicitly.
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    _check_batch(batch_size, strategy.num_replicas_in_sync)
    return strategy.scope()


def _check_batch(batch_size, count, what="devices"):
    if batch_size % count:
        raise ValueError(
            f"Invalid `batch_size` {batch_size}: with `distribute` it must be a multiple of "
            f"the {count} {what}."
        )


def use_virtual_cpu_devices(count):
    """Splits the CPU into `count` devices so data parallelism can be tried
    without accelerators. Call before the backend first runs anything (for
    JAX, before it is imported: this sets `XLA_FLAGS`)."""
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
    ).strip()
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
