"""A quiet console for the command lines: no framework start-up banners.

TensorFlow (imported on every backend: tf.data, image decoding) writes C++
log lines to the process's stderr: absl's "All log messages before
absl::InitializeLog() ...", oneDNN's "custom operations are on", the CPU
and CUDA/cuDNN/cuBLAS start-up lines, and at run time lines such as
`E0000 ... oneDNN supports DT_UINT8 only on platforms with AVX-512`. The
command lines call `quiet_frameworks` before Keras is imported; `--verbose`
leaves all of it at the frameworks' defaults. Standard library only: it runs
before Keras and TensorFlow are imported.
"""

import contextlib
import os
import re
import sys
import tempfile

from keras_smallvit.utils.import_hooks import LoaderWrappingFinder
from keras_smallvit.utils.import_hooks import WrappedLoader

# The lines TensorFlow's libraries log while they load, before its log level
# applies: absl's note, C++ log lines (`I0000 00:00:... file.cc:153] ...`,
# the older `2024-01-01 12:00:00.000000: I tensorflow/...`), and the second
# line of the CPU-instructions note.
BANNER_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags)"
)


def quiet_frameworks(verbose=False):
    """Silences the frameworks' start-up banners and C++ log lines; call it
    first thing in a command line, before Keras is imported.

    `TF_CPP_MIN_LOG_LEVEL=3` (unless the user set it): none of TensorFlow's
    C++ log lines. Its errors still raise Python exceptions with their
    message, and Python warnings and logging are untouched. The lines its
    libraries log while they load come before that setting applies, so the
    first `import tensorflow` runs with stderr (file descriptor 2) written
    to a temporary file, whose lines are then written back to stderr but for
    `BANNER_LINE`'s (a real error while importing still shows).

    Args:
        verbose: True leaves the frameworks' logging at its defaults
            (changes nothing).
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def banners_filtered():
    """Runs the block with file descriptor 2 captured, then writes back to
    stderr every captured line that is no `BANNER_LINE` (also when the
    block raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not BANNER_LINE.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietImport(LoaderWrappingFinder):
    """Runs the first `import tensorflow` (wherever it happens: Keras on the
    TensorFlow backend, tf.data on the others) inside `banners_filtered`,
    then steps aside. (A mere `importlib.util.find_spec("tensorflow")`, as
    Keras asks whether TensorFlow is installed, imports nothing.)"""

    def watches(self, fullname):
        return fullname == "tensorflow"

    def wrap(self, loader, fullname):
        return _QuietLoader(loader, self)


class _QuietLoader(WrappedLoader):
    def __init__(self, loader, finder):
        super().__init__(loader)
        self.finder = finder

    def run(self, module):
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)  # once
        with banners_filtered():
            self.loader.exec_module(module)
