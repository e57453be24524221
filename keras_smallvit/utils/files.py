"""Files that are never left half-written: write to a temporary name, then rename.

What may be replaced (the library never deletes what it did not write):
- the target `path`: if it does not exist, is an empty folder, or
  `is_ours(path)` (the caller's test for a previous result of its own; by
  default a regular file, for the files the library keeps in a folder it owns
  such as a run folder), or with `overwrite=True`;
- its temporary names, `<name>.partial<ext>` (being written) and
  `<name>.old<ext>` (the previous version during a folder swap), left behind
  by a killed process: an empty folder, a folder holding the
  `PARTIAL_MARKER` file (every folder the library writes under a temporary
  name starts with it), what `is_ours` accepts, and at `.partial` any
  regular file (the library writes files under that name only). Anything
  else there is refused, not removed.
"""

import os
import shutil

# Written first into a folder being written under a temporary name, so that a
# leftover of a killed write is recognised as the library's own.
PARTIAL_MARKER = ".keras_smallvit_partial"


def remove_path(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def make_partial_dir(path):
    """Creates the folder `path` (or keeps it) holding the `PARTIAL_MARKER`."""
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, PARTIAL_MARKER), "w").close()


def temporary_paths(final_path):
    """`(partial, old)`: the names `replace_atomically` uses next to `final_path`.

    They keep the extension (`model.keras` -> `model.partial.keras`), which
    Keras's savers require.
    """
    root, ext = os.path.splitext(final_path)
    if final_path.endswith(".weights.h5"):  # Keras requires the double extension
        root, ext = final_path[: -len(".weights.h5")], ".weights.h5"
    return root + ".partial" + ext, root + ".old" + ext


def _is_ours_or_empty(path, is_ours):
    if not os.path.lexists(path):
        return True
    if os.path.isdir(path) and not os.path.islink(path):
        entries = os.listdir(path)
        if not entries or PARTIAL_MARKER in entries:
            return True
    return bool(is_ours(path))


def check_replaceable(final_path, is_ours=os.path.isfile, overwrite=False, check_old=True):
    """Raises `FileExistsError` unless `replace_atomically` may write `final_path`.

    Args:
        final_path: the path to be replaced.
        is_ours: `is_ours(path)` is True for an existing path that is a
            previous result of the caller (default: a regular file).
        overwrite: whether `final_path` may be replaced even when it is not ours.
            Its temporary names are checked either way.
        check_old: whether to check `<name>.old<ext>` too (only a folder
            swap uses it).
    """
    if not overwrite and not _is_ours_or_empty(final_path, is_ours):
        raise FileExistsError(
            f"Refusing to replace `{final_path}`: it exists and is not a previous output of keras_smallvit "
            "(nor an empty folder). Choose another path, remove it, or pass `overwrite=True` "
            "(`--overwrite` on the command line) to replace it."
        )
    tmp_path, old_path = temporary_paths(final_path)
    # A file at `.partial` is a killed write's: the library writes files there and nowhere else.
    stale_is_ours = {tmp_path: lambda path: os.path.isfile(path) or is_ours(path), old_path: is_ours}
    for stale in (tmp_path, old_path) if check_old else (tmp_path,):
        if not _is_ours_or_empty(stale, stale_is_ours[stale]):
            raise FileExistsError(
                f"Refusing to remove `{stale}`: keras_smallvit uses this name as a temporary one for "
                f"`{final_path}`, and what is there is not its own. Rename or remove it."
            )


def replace_atomically(write, final_path, *, is_ours=os.path.isfile, overwrite=False):
    """Calls `write(tmp_path)`, then renames the result onto `final_path`.

    A directory (an export) is swapped in with two renames; a crash between
    them leaves the previous version at `<name>.old<ext>`, and the next call
    cleans up. Nothing is written or removed unless `check_replaceable`
    accepts `final_path` and its temporary names (see the module docstring).

    Args:
        write: `write(tmp_path)` writes the new file or folder at `tmp_path`.
        final_path: where the result goes.
        is_ours: `is_ours(path)` is True for an existing path that is a
            previous result of the caller (default: a regular file).
        overwrite: whether `final_path` may be replaced even when it is not ours.
    """
    check_replaceable(final_path, is_ours, overwrite, check_old=False)
    tmp_path, old_path = temporary_paths(final_path)
    remove_path(tmp_path)
    write(tmp_path)
    if os.path.isdir(tmp_path) or os.path.isdir(final_path):
        if not _is_ours_or_empty(old_path, is_ours):  # checked here: a file's write never uses `.old`
            remove_path(tmp_path)
            check_replaceable(final_path, is_ours, overwrite)  # raises, naming `.old`
        marker = os.path.join(tmp_path, PARTIAL_MARKER)
        if os.path.exists(marker):
            os.remove(marker)
        remove_path(old_path)
        if os.path.lexists(final_path):
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
