"""Data parallelism over several processes (`--job-addresses`): two JAX
processes on 127.0.0.1, one CPU device each, against one process on the
same global batches; a killed worker; the resume; the refusals."""

import json
import os
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from keras_smallvit.training import distribute
from tests.contract import BACKEND

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A tiny run: 3 epochs of 15 steps of 8 images (4 per process).
RUN_ARGS = [
    "--smoke", "--epochs", "3", "--warmup-epochs", "1", "--image-size", "16", "--batch-size", "8",
    "--set", "model.depth=1", "--set", "model.hidden_dim=16", "--set", "model.num_heads=2",
    "--set", "model.head_dim=8", "--set", "max_train_examples=120", "--set", "max_test_examples=16",
    "--no-export",
]
# A process that waits longer than this (a hang) fails the test.
PROCESS_TIMEOUT = 400
# The processes' heartbeat timeout here (the default waits a minute for a dead peer).
TEST_HEARTBEAT_SECONDS = 20
# `python -m training.train` with that heartbeat timeout.
LAUNCH = (
    "import sys; from keras_smallvit.training import distribute; "
    f"distribute.HEARTBEAT_TIMEOUT_SECONDS = {TEST_HEARTBEAT_SECONDS}; "
    "from training.train import main; main(sys.argv[1:])"
)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def environment():
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    return {**os.environ, **threads, "KERAS_BACKEND": "jax", "PYTHONPATH": REPO}


def start(workdir, log, *extra):
    command = [sys.executable, "-c", LAUNCH, *RUN_ARGS, "--workdir", str(workdir), *extra]
    return subprocess.Popen(command, cwd=REPO, env=environment(), stdout=log, stderr=subprocess.STDOUT)


def start_processes(workdir, tmp_path, name):
    addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    logs = [open(tmp_path / f"{name}_{i}.log", "wb") for i in range(2)]
    processes = [start(workdir, logs[i], "--job-addresses", addresses, "--process-id", str(i)) for i in range(2)]
    return processes, logs


def finish(processes, logs, tmp_path, name):
    for i, process in enumerate(processes):
        try:
            process.wait(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail(f"process {i} hangs: {tail(tmp_path / f'{name}_{i}.log')}")
    for log in logs:
        log.close()
    return [p.returncode for p in processes]


def tail(path, size=3000):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")[-size:]


def weight_arrays(path):
    arrays = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, np.array(item)) if isinstance(item, h5py.Dataset)
                     else None)
    return arrays


def max_abs_difference(path_a, path_b):
    a, b = weight_arrays(path_a), weight_arrays(path_b)
    assert a.keys() == b.keys() and a
    return max(float(np.max(np.abs(a[k].astype("float64") - b[k]), initial=0.0)) for k in a)


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.large
@pytest.mark.skipif(BACKEND != "jax", reason="multi-process data parallelism is JAX's (the others refuse: below)")
def test_two_processes_train_as_one_on_the_global_batch_fail_on_a_killed_worker_and_resume(tmp_path):
    from training.train import main

    single = tmp_path / "single"
    main(RUN_ARGS + ["--workdir", str(single)])  # the reference: one process, in this one

    # Two processes, one CPU device each; process 1 is killed once an epoch is committed.
    multi = tmp_path / "multi"
    processes, logs = start_processes(multi, tmp_path, "killed")
    state = multi / "backup" / "state.json"
    deadline = time.time() + PROCESS_TIMEOUT
    while not state.exists() and time.time() < deadline and all(p.poll() is None for p in processes):
        time.sleep(0.05)
    assert state.exists(), tail(tmp_path / "killed_0.log")
    processes[1].kill()
    killed_at = time.time()
    codes = finish(processes, logs, tmp_path, "killed")
    # Process 0 fails on its next collective and exits at once: not after the
    # heartbeat timeout, which its shutdown barrier would wait for the dead peer.
    assert codes[0] == 1, tail(tmp_path / "killed_0.log")
    assert time.time() - killed_at < TEST_HEARTBEAT_SECONDS, tail(tmp_path / "killed_0.log")
    assert "the same commands, on every host, resume it" in tail(tmp_path / "killed_0.log", 10**6)
    epoch = read_json(state)["epoch"]
    assert 1 <= epoch < 3, epoch

    # The same two commands resume the run from process 0's backup.
    processes, logs = start_processes(multi, tmp_path, "resumed")
    assert finish(processes, logs, tmp_path, "resumed") == [0, 0], tail(tmp_path / "resumed_0.log")
    assert f"Resuming {multi} at epoch {epoch + 1}/3" in tail(tmp_path / "resumed_1.log", 10**6)

    # Weights and optimizer state after the last step: those of one process on the global batches.
    difference = max_abs_difference(single / "backup" / "epoch_3.weights.h5", multi / "backup" / "epoch_3.weights.h5")
    print(f"2 processes vs 1 (3 epochs of 15 steps, resumed after epoch {epoch}): max abs weight difference "
          f"{difference:.3g}")
    assert difference < 1e-5
    expected, got = read_json(single / "metrics.json"), read_json(multi / "metrics.json")
    for key in ("final_top1", "best_top1", "best_epoch"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    # Only process 0 wrote: the folder holds the names of a one-process run's.
    assert sorted(os.listdir(multi)) == sorted(os.listdir(single))
    assert read_json(multi / "config.json") == {**read_json(single / "config.json"), "workdir": str(multi)}


@pytest.mark.skipif(BACKEND == "jax", reason="the refusal of the backends without a multi-process fit")
def test_other_backends_refuse_multi_process_naming_the_supported_one():
    with pytest.raises(ValueError, match=f"Invalid backend '{BACKEND}'.*'jax'"):
        distribute.initialize_processes("127.0.0.1:1,127.0.0.1:2", 0)
    assert distribute.num_processes() == 1 and distribute.is_writer()


@pytest.mark.parametrize("addresses, process_id, message", [
    ("127.0.0.1:1234", 0, "one address is one process"),
    ("127.0.0.1,127.0.0.1:2", 0, "is not host:port"),
    ("127.0.0.1:1:x,127.0.0.1:2", 0, "is not host:port"),
    ("127.0.0.1:1,127.0.0.1:1", 0, "listed twice"),
    ("127.0.0.1:1,127.0.0.1:2", 2, "Invalid `process_id` 2: an integer from 0 to 1"),
    ("", 0, "Invalid `job_addresses`"),
])
def test_bad_cluster_arguments_are_named(addresses, process_id, message):
    with pytest.raises(ValueError, match=message):
        distribute.parse_job_addresses(addresses, process_id)


def test_the_command_line_refuses_half_a_cluster_before_keras():
    from training.train import main

    with pytest.raises(SystemExit, match="give both"):
        main(["--smoke", "--job-addresses", "127.0.0.1:1,127.0.0.1:2"])
    with pytest.raises(SystemExit, match="Invalid `process_id` 5"):
        main(["--smoke", "--job-addresses", "127.0.0.1:1,127.0.0.1:2", "--process-id", "5"])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the shards are tf.data code, identical under every "
                    "KERAS_BACKEND; tested on the TensorFlow pass")
def test_the_processes_shards_make_up_each_global_batch_mixing_included(tmp_path):
    from keras_smallvit.training import load_split
    from keras_smallvit.training import train_dataset
    from tests.training.test_training import tiny_config

    config = tiny_config(tmp_path, epochs=2, mix_prob=1.0, batch_size=8)
    data = load_split(config, "train")

    def batches(shard=None):
        return list(train_dataset(data, config, 1, shard=shard).as_numpy_iterator())

    whole = batches()
    parts = [batches((i, 4)) for i in range(4)]
    assert len(whole) == 6 and all(len(p) == len(whole) for p in parts)
    for step, (x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[step][0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[step][1] for p in parts]), y)
    with pytest.raises(ValueError, match="Invalid `shard` \\(0, 3\\)"):
        train_dataset(data, config, shard=(0, 3))


@pytest.mark.parametrize("changes, message", [
    ({"aal": True, "aal_teacher_model": "resnet56"}, "`aal_teacher` None.*--teacher PATH"),
    ({"distillation": "hard", "aal_teacher_model": "resnet56"}, "`aal_teacher` None"),
    ({"diagnostics": True}, "`diagnostics` True"),
    ({"batch_augmentation": "device"}, "`batch_augmentation` 'device'"),
    ({"batch_size": 9}, "multiple of the 2 processes"),
])
def test_a_multi_process_run_refuses_what_it_does_not_support(tmp_path, monkeypatch, changes, message):
    import dataclasses

    from tests.training.test_training import tiny_config

    config = dataclasses.replace(tiny_config(tmp_path / "run"), **changes)
    distribute.check_multi_process_config(config)  # one process: all fine
    monkeypatch.setattr(distribute, "_cluster", distribute._Cluster(["127.0.0.1:1", "127.0.0.1:2"], 1))
    with pytest.raises(ValueError, match=message):
        distribute.check_multi_process_config(config)
    assert not (tmp_path / "run").exists()
