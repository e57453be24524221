"""What keeps one run folder one run: the resume check and the lock.

- `check_resumable(config, workdir)`: a folder that already holds a run
  resumes only with the settings that run was started with. Every
  `TrainConfig` field shapes the trajectory except `SETTINGS_THAT_CANNOT_CHANGE_THE_PAST`;
  any other difference refuses before anything is written, listing the
  keys `old -> new` and the two ways on. A non-empty folder that holds no
  run of ours is refused too (the library never writes over files it did not
  write); only the lock, the manifest and the temporary names of a run's
  files that are provably ours (see below) may be there.
- `RunLock(workdir)`: one training per folder at a time. An advisory lock
  (`fcntl.flock`) on `<workdir>/run.lock`, held for the run's life: the
  kernel drops it when the process dies, so a killed run never leaves a
  stale lock; the file names the holder's pid for the error.
- `record_created(workdir, *names)`: the manifest, `<workdir>/.keras_smallvit_run.json`,
  lists every top-level name the run created; it is written (atomically)
  before the run creates a new one.
- `clear_run_folder(workdir)`: `restart=True` removes exactly the names the
  manifest lists, the manifest, and the temporary names of a run's files
  that are provably ours (`<name>.partial<ext>` of a `RUN_ARTEFACTS` name:
  a regular file, or a folder holding `PARTIAL_MARKER`). Nothing else: not
  a user's `backup.old/` nor `notes.partial.txt`. A folder of an older
  version has no manifest: there, the exact `RUN_ARTEFACTS` names go only
  when `config.json` parses as a `TrainConfig` (the folder provably held a
  run); otherwise none. If a `RUN_ARTEFACTS` name would stay, the restart
  is refused before anything is removed (the new run would resume or
  overwrite it).
"""

import json
import os

CONFIG_FILE = "config.json"
LOCK_FILE = "run.lock"
MANIFEST_FILE = ".keras_smallvit_run.json"

# May differ between a run and its resume: they change where results go,
# what is reported or how fast the data come, not what is trained.
SETTINGS_THAT_CANNOT_CHANGE_THE_PAST = (
    "workdir",
    "export",
    "diagnostics",
    "diagnostics_images",
    "data_workers",
    "data_mode",  # streamed or in memory: the same batches
    "memory_budget_gb",
    "eval_batch_size",
    "data_dir",
)

# Every top-level name a run may write into its folder (besides the lock and
# the manifest); `clear_run_folder` removes those the manifest lists.
RUN_ARTEFACTS = (
    CONFIG_FILE,
    "log.csv",
    "metrics.json",
    "best.keras",
    "last.keras",
    "backup",
    "tensorboard",
    "saved_model",
    "diagnostics",
    "teacher",
)


class RunFolderMismatch(ValueError):
    """The command differs from the run its folder holds."""


class RunFolderInUse(RuntimeError):
    """Another training holds the run folder."""


def _trajectory_settings(config):
    values = json.loads(config.to_json())
    return {k: v for k, v in values.items() if k not in SETTINGS_THAT_CANNOT_CHANGE_THE_PAST}


def read_manifest(workdir):
    """The names `workdir`'s manifest lists (a set), or None without a
    readable manifest (a folder of an older version)."""
    try:
        with open(os.path.join(workdir, MANIFEST_FILE)) as f:
            names = json.load(f)["created"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return set(names) if isinstance(names, list) else None


def record_created(workdir, *names):
    """Lists `names` (top-level names in `workdir` the run is about to
    create) in the manifest; names that exist already are left out (they
    are listed, or not the run's). Writes only when something is new."""
    listed = read_manifest(workdir) or set()
    new = {n for n in names if n not in listed and not os.path.lexists(os.path.join(workdir, n))}
    if new:
        _write_manifest(workdir, listed | new)


def _write_manifest(workdir, names):
    from keras_smallvit.utils.files import write_text_atomically

    os.makedirs(workdir, exist_ok=True)
    text = json.dumps({"created": sorted(names)}, indent=1)
    write_text_atomically(os.path.join(workdir, MANIFEST_FILE), text)


def adopt_older_run(workdir):
    """Writes the manifest of a folder of an older version that holds a run
    of ours (its `config.json` parses): its `RUN_ARTEFACTS` names."""
    if read_manifest(workdir) is None and _holds_run_config(workdir):
        _write_manifest(workdir, {n for n in RUN_ARTEFACTS if os.path.lexists(os.path.join(workdir, n))})


def _holds_run_config(workdir):
    from keras_smallvit.training.config import TrainConfig

    path = os.path.join(workdir, CONFIG_FILE)
    try:
        with open(path) as f:
            TrainConfig.from_json(f.read())
    except (OSError, ValueError, TypeError):
        return False
    return os.path.isfile(path) and not os.path.islink(path)


def _is_our_temporary(workdir, name):
    """Whether `name` is a killed write's temporary name of a run's file:
    `<name>.partial<ext>` of a `RUN_ARTEFACTS` name (or of the manifest)
    holding a regular file, or a folder with the `PARTIAL_MARKER`."""
    from keras_smallvit.utils.files import PARTIAL_MARKER
    from keras_smallvit.utils.files import temporary_paths

    if name not in {temporary_paths(n)[0] for n in RUN_ARTEFACTS + (MANIFEST_FILE,)}:
        return False
    path = os.path.join(workdir, name)
    if os.path.islink(path):
        return False
    return os.path.isfile(path) or (os.path.isdir(path) and PARTIAL_MARKER in os.listdir(path))


def run_names(workdir):
    """The top-level names in `workdir` that a run wrote (sorted): see the
    module docstring."""
    listed = read_manifest(workdir)
    if listed is None:
        listed = set(RUN_ARTEFACTS) if _holds_run_config(workdir) else set()
    listed |= {MANIFEST_FILE}
    return sorted(n for n in os.listdir(workdir) if n in listed or _is_our_temporary(workdir, n))


def check_resumable(config, workdir):
    """Raises `RunFolderMismatch` if `workdir` holds a run with other
    trajectory settings than `config`, or files that are not a run of ours.

    Returns True when there is a run to resume (or to finish), False for a
    new or empty folder.
    """
    from keras_smallvit.training.config import TrainConfig

    if not os.path.isdir(workdir):
        if os.path.exists(workdir):
            raise RunFolderMismatch(f"Invalid `workdir` {workdir!r}: it is a file, not a folder.")
        return False
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(config_path):
        # A run killed before its config was written leaves only these.
        ours = {LOCK_FILE, MANIFEST_FILE}
        foreign = sorted(n for n in os.listdir(workdir) if n not in ours and not _is_our_temporary(workdir, n))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunFolderMismatch(
                f"Invalid `workdir` {workdir!r}: it holds files that are not a training run's "
                f"({shown}) and no {CONFIG_FILE}. Nothing was written. Give an empty or new --workdir."
            )
        return False
    try:
        with open(config_path) as f:
            saved = TrainConfig.from_json(f.read())
    except (ValueError, TypeError) as error:
        raise RunFolderMismatch(
            f"Cannot read {config_path}: {error}. The run folder's config is damaged: use a new "
            "--workdir, or --restart to start this folder over."
        ) from None
    old, new = _trajectory_settings(saved), _trajectory_settings(config)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        lines = "\n".join(f"  {k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise RunFolderMismatch(
            f"{workdir!r} holds a run with other settings; resuming it with these would mix two runs:\n"
            f"{lines}\n"
            "Nothing was changed. Either run with a new --workdir, or pass --restart "
            "(`train(config, restart=True)`) to discard that run and start over in this folder. "
            f"(Settings that may differ on resume: {', '.join(SETTINGS_THAT_CANNOT_CHANGE_THE_PAST)}.)"
        )
    return True


def clear_run_folder(workdir):
    """Removes the files a run wrote from `workdir` (`run_names`: the names
    its manifest lists, see the module docstring); nothing else.

    Raises `RunFolderMismatch`, before removing anything, when a
    `RUN_ARTEFACTS` name would stay (not provably the run's).
    """
    from keras_smallvit.utils.files import remove_path

    if not os.path.isdir(workdir):
        return
    names = run_names(workdir)
    kept = sorted(n for n in RUN_ARTEFACTS if os.path.lexists(os.path.join(workdir, n)) and n not in names)
    if kept:
        raise RunFolderMismatch(
            f"Cannot restart {workdir!r}: it holds {', '.join(kept)}, which the new run would write, but "
            f"no record ({MANIFEST_FILE}, or a readable {CONFIG_FILE}) shows that a run wrote them. "
            "Nothing was removed. Move them away, or use a new --workdir."
        )
    for name in names:  # the manifest last: a killed restart still knows the rest
        if name != MANIFEST_FILE:
            remove_path(os.path.join(workdir, name))
    remove_path(os.path.join(workdir, MANIFEST_FILE))


class RunLock:
    """`with RunLock(workdir):` holds `<workdir>/run.lock` for one training.

    Raises `RunFolderInUse` naming the other process when the folder is in use.
    Where `fcntl` is missing (Windows) the lock is not enforced.
    """

    def __init__(self, workdir):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._file = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # no advisory locks here: one run per folder is up to the user
            return self
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderInUse(
                f"{os.path.dirname(self.path)!r} is in use by another training ({holder}). "
                "One training per run folder: wait for it, stop it, or use another --workdir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc_info):
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        return False

