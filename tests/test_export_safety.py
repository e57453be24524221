"""Export never destroys what it did not write, and a killed export leaves
no process and no temporary folder behind.

Cheap: the path checks come before any model work, and the tests that need
an export written use a stand-in writer (the real ones are covered in
tests/test_export.py) except one small in-process export.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import keras_smallvit
from keras_smallvit.export import serving
from keras_smallvit.utils import files
from tests.backend_utils import tree_contents
from tests.contract import BACKEND
from tests.test_export import classifier  # noqa: F401 (a fixture)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_run_folder(path):
    os.makedirs(path / "backup")
    for name in ("best.keras", "last.keras", "log.csv", "metrics.json", "backup/epoch_3.weights.h5"):
        (path / name).write_bytes(b"user data: " + name.encode())
    return tree_contents(path)


def fake_write(model, path, format, config):
    """Stands in for the real writer: what an export of ours looks like."""
    files.make_partial_dir(path)
    os.makedirs(os.path.join(path, "assets.extra"))
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"new graph")
    with open(os.path.join(path, "assets.extra", "serving_config.json"), "w") as f:
        json.dump(config, f)


def test_export_over_a_run_folder_fails_and_leaves_it_untouched(classifier, tmp_path):
    run = tmp_path / "x"
    before = make_run_folder(run)
    with pytest.raises(FileExistsError, match="overwrite") as error:
        keras_smallvit.export_for_serving(classifier, str(run))
    assert str(run) in str(error.value)
    assert tree_contents(run) == before
    assert sorted(os.listdir(tmp_path)) == ["x"]  # nothing written beside it either


def test_export_over_a_regular_file_fails_and_leaves_it_untouched(classifier, tmp_path):
    for name, format in (("notes.txt", "saved_model"), ("model.onnx", "onnx")):
        path = tmp_path / name
        path.write_bytes(b"\x08 not an export of ours")  # even with ONNX's first byte
        with pytest.raises(FileExistsError, match="overwrite") as error:
            keras_smallvit.export_for_serving(classifier, str(path), format=format)
        assert str(path) in str(error.value)
        assert path.read_bytes() == b"\x08 not an export of ours"
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "notes.txt"]


def test_cli_over_a_run_folder_fails_and_leaves_it_untouched(tmp_path):
    from keras_smallvit.export.__main__ import main

    run = tmp_path / "x"
    before = make_run_folder(run)
    # In process: `python -m keras_smallvit.export` is this `main`; SystemExit
    # with a message is exit status 1 with that message on stderr.
    with pytest.raises(SystemExit) as exit_:
        main([str(run / "best.keras"), str(run)])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and str(run) in message and "--overwrite" in message, message
    assert tree_contents(run) == before
    assert sorted(os.listdir(tmp_path)) == ["x"]


@pytest.mark.parametrize("existing", ["none", "empty_folder", "previous_export", "foreign_with_overwrite"])
def test_export_writes_over_what_it_may_replace(classifier, tmp_path, monkeypatch, existing):
    path = tmp_path / "saved_model"
    overwrite = existing == "foreign_with_overwrite"
    if existing == "empty_folder":
        os.makedirs(path)
    elif existing == "previous_export":
        fake_write(None, str(path), "saved_model", {"format": "saved_model", "inputs": {}, "outputs": {}})
        os.remove(path / files.PARTIAL_MARKER)
        (path / "saved_model.pb").write_bytes(b"old graph")
    elif overwrite:
        make_run_folder(path)
    monkeypatch.setattr(serving, "_write", fake_write)
    assert keras_smallvit.export_for_serving(classifier, str(path), overwrite=overwrite) == str(path)
    assert (path / "saved_model.pb").read_bytes() == b"new graph"
    assert sorted(tree_contents(path)) == ["assets.extra/serving_config.json", "saved_model.pb"]  # no marker
    assert os.listdir(tmp_path) == ["saved_model"]


def test_stale_temporary_names_are_removed_only_when_ours(classifier, tmp_path, monkeypatch):
    monkeypatch.setattr(serving, "_write", fake_write)
    path = tmp_path / "saved_model"
    partial, old = files.temporary_paths(str(path))
    os.makedirs(partial)
    (tmp_path / "saved_model.partial" / "mine.txt").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="saved_model.partial"):
        keras_smallvit.export_for_serving(classifier, str(path), overwrite=True)
    assert tree_contents(partial) == {"mine.txt": b"user data"}
    assert not os.path.exists(path)

    # A killed export's leftovers (marked), and a killed swap's `.old` (a previous export).
    files.remove_path(partial)
    files.make_partial_dir(partial)
    fake_write(None, old, "saved_model", {"format": "saved_model", "inputs": {}, "outputs": {}})
    keras_smallvit.export_for_serving(classifier, str(path))
    assert os.listdir(tmp_path) == ["saved_model"]


def test_an_onnx_file_is_ours_by_its_serving_config_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["images"], ["probabilities"])], "g",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [1])],
    )
    for name, props, ours in [
        ("ours.onnx", {"serving_config": json.dumps({"format": "onnx", "inputs": {}, "outputs": {}})}, True),
        ("foreign.onnx", {}, False),
        ("other_config.onnx", {"serving_config": "not json"}, False),
    ]:
        model_proto = onnx.helper.make_model(graph)
        onnx.helper.set_model_props(model_proto, props)
        onnx.save(model_proto, str(tmp_path / name))
        assert serving.is_export(str(tmp_path / name)) == ours, name


@pytest.mark.skipif(BACKEND == "torch", reason="a real export on torch runs a ~10 s subprocess; the rule is backend-independent")
def test_a_real_export_replaces_the_previous_one(classifier, tmp_path):
    path = str(tmp_path / "saved_model")
    keras_smallvit.export_for_serving(classifier, path)
    assert serving.is_export(path)
    keras_smallvit.export_for_serving(classifier, path)  # ours: replaced without `overwrite`
    assert serving.is_export(path) and files.PARTIAL_MARKER not in os.listdir(path)
    assert os.listdir(tmp_path) == ["saved_model"]


PARENT = r"""
import sys
import keras
import keras_smallvit

images = keras.Input((16, 16, 3))
model = keras.Model(images, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(images)))
keras_smallvit.export_for_serving(model, sys.argv[1], scale=1 / 255)
"""


def _processes():
    """pid -> (parent pid, state, command line), from /proc."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(pid)] = (int(fields[1]), fields[0], cmdline)
    return out


def _alive(pid):
    process = _processes().get(pid)
    return process is not None and process[1] not in ("Z", "X")


@pytest.mark.large
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")
@pytest.mark.skipif(
    BACKEND != "torch",
    reason="its own torch-backend process exports; the same on every backend: run once (each process pays ~10 s)",
)
def test_kill_9_during_a_torch_export_leaves_no_process_and_no_temporary_folder(classifier, tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    os.makedirs(tmp)
    path = tmp_path / "saved_model"
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=REPO_ROOT, TMPDIR=str(tmp), TF_CPP_MIN_LOG_LEVEL="2")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(path)], env=env, cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        child, deadline = None, time.time() + 120
        while child is None and parent.poll() is None and time.time() < deadline:
            children = [
                pid for pid, (ppid, _, cmdline) in _processes().items()
                if ppid == parent.pid and "keras_smallvit.export" in cmdline
            ]
            child = children[0] if children else None
            time.sleep(0.05)
        assert child is not None, f"no export subprocess seen: {parent.poll()} {parent.stderr.read()[-2000:]!r}"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while _alive(child) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the export subprocess outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stderr.close()
    assert [n for n in os.listdir(tmp) if n.startswith(serving.TEMPORARY_PREFIX)]  # kill -9 runs no cleanup
    assert os.path.exists(tmp_path / "saved_model.partial")

    # The next export removes both leftovers.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(serving, "_write", fake_write)
    keras_smallvit.export_for_serving(classifier, str(path))
    assert os.listdir(tmp) == []
    assert sorted(os.listdir(tmp_path)) == ["saved_model", "tmp"]


def test_files_the_library_keeps_replace_its_own_files_only(tmp_path):
    """The run folder's files (`replace_atomically`'s default): a regular file
    is replaced, a folder of the user's at that name is not, and a user's
    `.old` never matters to a file's write."""
    path = str(tmp_path / "log.csv")
    files.write_text_atomically(path, "old")
    os.makedirs(tmp_path / "log.old.csv" / "mine")
    (tmp_path / "log.partial.csv").write_text("a killed write")
    files.write_text_atomically(path, "new")
    assert open(path).read() == "new" and os.path.isdir(tmp_path / "log.old.csv" / "mine")
    assert not os.path.exists(tmp_path / "log.partial.csv")
    os.makedirs(tmp_path / "best.keras" / "mine")
    with pytest.raises(FileExistsError, match="best.keras.*overwrite"):
        files.write_text_atomically(str(tmp_path / "best.keras"), "x")
    assert os.listdir(tmp_path / "best.keras") == ["mine"]
