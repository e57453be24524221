import gc
import os
import tempfile

# Before Keras is imported: keep its config and caches out of the user's home.
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras_home_"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests' models are tiny: XLA's CPU compile time (LLVM's optimisation of
# the generated code) dominates their run time. Level 0 keeps every HLO pass,
# so the compiled computation is the same; it compiles ~30 % faster here.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# JAX compiles every eager op for every new shape (~30 ms each): one on-disk
# compilation cache for this run, shared by the pytest-xdist workers and the
# child processes the tests start (they inherit the environment), so each
# computation compiles once per run instead of once per process. Made here
# and removed at exit by the process that made it (the xdist controller).
# No size limit: with one, JAX lists the whole folder on every write (the
# JAX model tests ran 2x slower). An entry read while another process writes
# it fails to decode, which JAX turns into a warning and a fresh compile.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil

    _jax_cache = tempfile.mkdtemp(prefix="keras_smallvit_tests_jax_cache_")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True)
def _isolation():
    """Every test starts from the float32 policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1337)
    yield
    keras.config.set_dtype_policy("float32")
    # Without its full garbage collection, which costs more the more objects
    # earlier tests left (0.1-0.5 s a test): Python's own generational
    # collection, whose cost is amortised, frees the cycles.
    keras.backend.clear_session(free_memory=False)


def pytest_collection_modifyitems(config, items):
    """The `large` tests (subprocesses, end-to-end runs: 10-90 s each)
    first, in their collected order: pytest-xdist's workers then start on
    them and share the many short tests at the end, instead of one worker
    running the last long test alone while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("large") is None)


def pytest_collection_finish(session):
    """Freeze what collection imported (TensorFlow, JAX, torch, TFDS: ~440,000
    objects) out of the garbage collector's view, so that the collector's
    full passes do not walk them again and again."""
    gc.collect()
    gc.freeze()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}"
