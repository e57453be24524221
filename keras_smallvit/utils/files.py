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

An `OSError` of a write (a full disk, a read-only folder) is raised again as
a `WriteError` naming the path and the free space on its file system, with
the same errno and builtin type (`except PermissionError` still catches it)
and the original chained.
"""

import errno as errno_codes
import os
import re
import shutil

# Written first into a folder being written under a temporary name, so that a
# leftover of a killed write is recognised as the library's own.
PARTIAL_MARKER = ".keras_smallvit_partial"


class WriteError(OSError):
    """An `OSError` of one of the library's writes, naming the path and the
    free space on its file system (`message`, which `str()` gives).

    Raised as a subclass of the original's type (e.g. `PermissionError`),
    with its errno; the original is its `__cause__`. `disk_full`: whether
    the file system is full (ENOSPC).
    """

    disk_full = False

    def __str__(self):
        return self.message


_WRITE_ERROR_TYPES = {OSError: WriteError}


def _write_error_type(original):
    if original not in _WRITE_ERROR_TYPES:  # a builtin subclass: PermissionError, ...
        name = f"WriteError_{original.__name__}"
        _WRITE_ERROR_TYPES[original] = type(name, (WriteError, original), {"__module__": __name__})
    return _WRITE_ERROR_TYPES[original]


def free_space_text(path):
    """`"<size> free of <size>"` on the file system of `path` (or of its nearest existing folder)."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "free space unknown"
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def _size(count):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    return f"{count:.1f} TiB"


def write_error(error, path):
    """The `WriteError` for `error`, an `OSError` raised writing `path`
    (a `WriteError` already is one, and a `FileExistsError` is a refusal
    that names its path: both returned as they are)."""
    if isinstance(error, (WriteError, FileExistsError)):
        return error
    kind = type(error) if type(error).__module__ == "builtins" else OSError
    reason = error.strerror or str(error)
    code = error.errno
    if code is None:  # h5py: "... errno = 28, error message = 'No space left on device' ..."
        found = re.search(r"errno = (\d+)", str(error))
        code = int(found.group(1)) if found else None
    message = f"Cannot write {path}: {reason} (errno {code}); {free_space_text(path)} on its file system."
    if code == errno_codes.ENOSPC:
        message += " The disk is full: free some space and try again."
    new = _write_error_type(kind)(error.errno, reason, path)
    new.message, new.disk_full = message, code == errno_codes.ENOSPC
    return new


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
    try:
        remove_path(tmp_path)
        write(tmp_path)
    except OSError as error:
        raise write_error(error, final_path) from error
    if (os.path.isdir(tmp_path) or os.path.isdir(final_path)) and not _is_ours_or_empty(old_path, is_ours):
        remove_path(tmp_path)  # checked here: a file's write never uses `.old`
        check_replaceable(final_path, is_ours, overwrite)  # raises, naming `.old`
    try:
        _rename_into_place(tmp_path, final_path, old_path)
    except OSError as error:
        raise write_error(error, final_path) from error


def _rename_into_place(tmp_path, final_path, old_path):
    if os.path.isdir(tmp_path) or os.path.isdir(final_path):
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
