"""What keeps one run folder one run: the resume check and the lock.

- `check_resumable(config, workdir)`: a folder that already holds a run
  resumes only with the settings that run was started with. Every
  `TrainConfig` field shapes the trajectory except `SETTINGS_THAT_CANNOT_CHANGE_THE_PAST`;
  any other difference refuses before anything is written, listing the
  keys `old -> new` and the two ways on. A non-empty folder that holds no
  run of ours is refused too (the library never writes over files it did not
  write).
- `RunLock(workdir)`: one training per folder at a time. An advisory lock
  (`fcntl.flock`) on `<workdir>/run.lock`, held for the run's life: the
  kernel drops it when the process dies, so a killed run never leaves a
  stale lock; the file names the holder's pid for the error.
- `clear_run_folder(workdir)`: `restart=True` removes the artefacts a run
  writes (and only those), to start over in place.
"""

import json
import os

CONFIG_FILE = "config.json"
LOCK_FILE = "run.lock"

# May differ between a run and its resume: they change where results go,
# what is reported or how fast the data come, not what is trained.
SETTINGS_THAT_CANNOT_CHANGE_THE_PAST = (
    "workdir",
    "export",
    "diagnostics",
    "diagnostics_images",
    "data_workers",
    "eval_batch_size",
    "data_dir",
)

# Everything a run writes into its folder (`clear_run_folder` removes these only).
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


def _is_partial(name):
    return ".partial" in name or ".old" in name


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
        foreign = sorted(n for n in os.listdir(workdir) if n != LOCK_FILE and not _is_partial(n))
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
    """Removes the artefacts of a run from `workdir` (`RUN_ARTEFACTS` and
    their half-written `.partial`/`.old` copies); nothing else."""
    from keras_smallvit.utils.files import remove_path

    if not os.path.isdir(workdir):
        return
    for name in os.listdir(workdir):
        base = name.replace(".partial", "").replace(".old", "")
        if name in RUN_ARTEFACTS or base in RUN_ARTEFACTS:
            remove_path(os.path.join(workdir, name))


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

