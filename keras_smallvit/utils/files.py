"""Files that are never left half-written: write to a temporary name, then rename."""

import os
import shutil


def remove_path(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def replace_atomically(write, final_path):
    """Calls `write(tmp_path)`, then renames the result onto `final_path`.

    The temporary path keeps the extension (`model.keras` ->
    `model.partial.keras`), which Keras's savers require. A directory (an
    export) is swapped in with two renames; a crash between them leaves the
    previous version at `<name>.old<ext>`, and the next call cleans up.
    """
    root, ext = os.path.splitext(final_path)
    if final_path.endswith(".weights.h5"):  # Keras requires the double extension
        root, ext = final_path[: -len(".weights.h5")], ".weights.h5"
    tmp_path, old_path = root + ".partial" + ext, root + ".old" + ext
    remove_path(tmp_path)
    write(tmp_path)
    if os.path.isdir(tmp_path):
        remove_path(old_path)
        if os.path.exists(final_path):
            os.replace(final_path, old_path)
        os.replace(tmp_path, final_path)
        remove_path(old_path)
    else:
        os.replace(tmp_path, final_path)  # atomic for files on POSIX


def write_text_atomically(path, text):
    def write(tmp_path):
        with open(tmp_path, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    replace_atomically(write, path)
