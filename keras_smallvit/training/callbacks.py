"""The run folder: resumable backup, best/last checkpoints, CSV log, metrics.

Written by hand because Keras's `BackupAndRestore`, `ModelCheckpoint` and
`CSVLogger` write in place: a kill during a write can leave a truncated file
where a good one was, `BackupAndRestore` writes its weights and its epoch
counter separately (a kill between them pairs new weights with an old epoch),
and after a resume `ModelCheckpoint` forgets the best score and `CSVLogger`
repeats rows. Here every file is written to a temporary name and renamed
into place, and one state file (`backup/state.json`) names the backup
weights together with the epoch, history and best score they belong to.
"""

import csv
import io
import json
import math
import os
import time

import keras
import numpy as np

from keras_smallvit.training import distribute
from keras_smallvit.training.run_guard import record_created
from keras_smallvit.utils.files import remove_path  # noqa: F401  (re-exported)
from keras_smallvit.utils.files import replace_atomically
from keras_smallvit.utils.files import write_text_atomically  # noqa: F401


# Consecutive steps with a non-finite loss allowed under loss scaling
# (mixed_float16), whose optimizer skips such steps by design.
LOSS_SCALING_NONFINITE_STEPS = 50


class TrainingDiverged(RuntimeError):
    """A training run whose loss, validation loss or weights became
    non-finite (NaN or inf).

    Attributes:
        epoch: the epoch (1-based) in which it was found.
        step: the step of that epoch (1-based): the one whose loss was
            non-finite (`source` "loss"), else the epoch's last (found at
            its end), or None when no step was seen.
        source: where it was found: `"loss"` (the training loss logged at
            `step`), `"val_loss"` (the validation loss at the end of the
            epoch: the outputs overflow) or `"weights"` (the weights at the
            end of the epoch).
        loss: the non-finite loss value (None for `"weights"`).
        backup_epoch: the last epoch the run folder holds (its weights are
            finite), or None.
    """

    SOURCES = ("loss", "val_loss", "weights")

    def __init__(self, epoch, step=None, source="loss", loss=None, backup_epoch=None, consecutive=1, folder=True):
        if source not in self.SOURCES:
            raise ValueError(f"Invalid `source`: {source!r}. Allowed values: {', '.join(self.SOURCES)}.")
        self.epoch, self.step, self.source, self.loss, self.backup_epoch = epoch, step, source, loss, backup_epoch
        after = f", after its step {step}" if step is not None else ""
        if source == "loss":
            where = f"the loss is {loss} at step {step} of epoch {epoch}"
            if consecutive > 1:
                where += f" (non-finite for {consecutive} consecutive steps)"
        elif source == "val_loss":
            where = f"the validation loss is {loss} at the end of epoch {epoch}{after} (the outputs overflow)"
        else:
            where = f"the model's weights are non-finite (NaN or inf) at the end of epoch {epoch}{after}"
        message = (
            f"Training diverged: {where}. The usual causes: a learning rate too high (`lr`, "
            "`warmup_start_lr`), or mixed_float16 precision overflowing (use mixed_bfloat16 or float32)."
        )
        if folder:
            message += (
                f" The run folder keeps epoch {backup_epoch}, the last with finite weights (backup, last.keras)."
                if backup_epoch
                else " No epoch was saved: the run folder holds no checkpoint."
            )
        super().__init__(message)

    def record(self):
        """The `"diverged"` entry of `metrics.json`."""
        loss = None if self.loss is None else str(self.loss)  # JSON has no NaN
        return {
            "epoch": self.epoch,
            "step": self.step,
            "source": self.source,
            "loss": loss,
            "backup_epoch": self.backup_epoch,
        }


def backup_epoch(workdir):
    """The epoch `workdir`'s backup holds (`backup/state.json`), or None."""
    try:
        with open(os.path.join(workdir, "backup", "state.json")) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_divergence(workdir, error):
    """Writes `{"diverged": error.record()}` into `<workdir>/metrics.json`
    (its other entries kept): a diverged run reports no result."""
    path = os.path.join(workdir, "metrics.json")
    metrics = {}
    if os.path.exists(path):
        try:
            with open(path) as f:
                metrics = json.load(f)
        except ValueError:
            metrics = {}
    metrics["diverged"] = error.record()
    record_created(workdir, "metrics.json")
    write_text_atomically(path, json.dumps(metrics, indent=2))


def weights_are_finite(model):
    """Whether every floating weight of `model` is finite (checked in NumPy)."""
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return False
    return True


class StopOnDivergence(keras.callbacks.Callback):
    """Stops a run whose loss becomes non-finite, with `TrainingDiverged`
    (naming the epoch and step and the usual causes), after writing
    `"diverged": {"epoch", "step", ...}` into `<workdir>/metrics.json`.

    Keras' `TerminateOnNaN` only sets `stop_training`: the epoch still ends,
    and checkpoints of NaN weights are written, the run "succeeds". Here the
    run stops at once, before the epoch's end, so `RunFolder` (after this
    callback in the list) keeps the last finite epoch. At the end of an
    epoch, a non-finite validation loss (finite weights whose outputs
    overflow) stops the run too, before `RunFolder` saves that epoch.

    The logged loss is the epoch's running mean: it turns non-finite at the
    first non-finite step, and stays so for the rest of the epoch.

    Args:
        workdir: the run folder (for `metrics.json`); None writes nothing.
        max_nonfinite_steps: consecutive steps with a non-finite loss
            allowed before stopping. None: 0, or `LOSS_SCALING_NONFINITE_STEPS`
            (50) when the model's optimizer scales the loss (mixed_float16),
            which skips non-finite steps by design.
    """

    def __init__(self, workdir=None, max_nonfinite_steps=None):
        super().__init__()
        self.workdir = workdir
        self.max_nonfinite_steps = max_nonfinite_steps
        self._epoch = 0
        self._steps = 0
        self._nonfinite = 0

    def allowed_nonfinite_steps(self):
        if self.max_nonfinite_steps is not None:
            return self.max_nonfinite_steps
        scaled = isinstance(getattr(self.model, "optimizer", None), keras.optimizers.LossScaleOptimizer)
        return LOSS_SCALING_NONFINITE_STEPS if scaled else 0

    def _stop(self, **details):
        folder = self.workdir is not None
        error = TrainingDiverged(
            self._epoch + 1, backup_epoch=backup_epoch(self.workdir) if folder else None, folder=folder, **details
        )
        if folder:
            record_divergence(self.workdir, error)
        raise error

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._steps = 0
        self._nonfinite = 0  # the running mean starts again

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(keras.ops.convert_to_numpy(loss))
        if math.isfinite(loss):
            self._nonfinite = 0
            return
        self._nonfinite += 1
        if self._nonfinite > self.allowed_nonfinite_steps():
            self._stop(step=batch + 1, source="loss", loss=loss, consecutive=self._nonfinite)

    def on_epoch_end(self, epoch, logs=None):
        val_loss = (logs or {}).get("val_loss")
        if val_loss is not None and not math.isfinite(float(val_loss)):
            self._stop(step=self._steps or None, source="val_loss", loss=float(val_loss))


def best_weights_name(epoch):
    return f"best_epoch_{epoch}.weights.h5"


def is_loadable_keras_file(path):
    """Whether `path` is a complete `.keras` archive (its config and weights
    are there and the zip's checksums hold), without building the model."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            return {"config.json", "model.weights.h5"} <= names and archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def _seed_generator_variables(model):
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def seed_generator_states(model):
    """States of the model's random generators (dropout, stochastic depth),
    in model order: `save_weights` leaves them out, yet an exact resume needs
    them. (Their names carry per-process counters, so order is the key.)"""
    return [keras.ops.convert_to_numpy(v).tolist() for v in _seed_generator_variables(model)]


def restore_seed_generator_states(model, states):
    variables = _seed_generator_variables(model)
    if len(states) != len(variables):
        raise ValueError(
            f"The backup has {len(states)} random generator states; the model has "
            f"{len(variables)}. Was the run folder made with another model config?"
        )
    for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))


class RunFolder(keras.callbacks.Callback):
    """Keeps a run folder resumable and consistent after every epoch.

    Files under `workdir`:
    - `backup/epoch_<k>.weights.h5` + `backup/state.json`: model and
      optimizer state after epoch `k` (the optimizer's step counter drives the
      schedule), the random generators' states and the history so far;
      `restore()` reads them back.
    - `last.keras`, `best.keras`: full models after the last epoch and at the
      best `monitor` value so far (the best survives a resume).
    - `log.csv`: one row per finished epoch, rewritten from the history, so a
      resumed run never repeats a row; `restore()` rebuilds it from the
      backup's history when it is missing or differs (e.g. deleted).
    - the run's manifest (`run_guard.record_created`): each of these names
      is listed there before it is first created.

    An epoch whose weights (of the fit or the saved model) are non-finite is
    not written at all: `TrainingDiverged` is raised, after `"diverged"` is
    recorded in `metrics.json`, and the folder keeps the last finite epoch.

    Args:
        workdir: the run folder.
        monitor: the logged metric that defines "best" (higher is better).
        saved_model: the model written to `best.keras`/`last.keras`; None =
            the model being fit. (AAL fits a distiller but saves its student:
            no link head, no teacher. The backup holds the whole fit model.)
        write: False for a process that only reads the folder (not process
            0 of a multi-process run): `restore` loads the backup, the
            history and best score are kept, nothing is written or repaired.
    """

    def __init__(self, workdir, monitor="val_top1", saved_model=None, write=True):
        super().__init__()
        self.workdir = workdir
        self.write = write
        self.monitor = monitor
        self.saved_model = saved_model
        self.backup_dir = os.path.join(workdir, "backup")
        self.state_path = os.path.join(self.backup_dir, "state.json")
        self.history = []
        self.best = None
        self.best_epoch = None
        self.epoch_seconds = []

    def load_state(self):
        """The saved state dict, or None when the run starts from scratch."""
        if not os.path.exists(self.state_path):
            return None
        try:
            with open(self.state_path) as f:
                state = json.load(f)
            for key in ("epoch", "weights", "history", "best", "best_epoch"):
                state[key]  # noqa: B018 (a KeyError names what is missing)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(self._damaged(self.state_path, error)) from None
        return state

    def _damaged(self, path, error):
        return (
            f"Cannot read {path} ({type(error).__name__}: {error}): the run folder's backup is damaged. "
            f"To start this folder over, rerun with --restart (`train(config, restart=True)`); "
            "or use a new --workdir."
        )

    def restore(self, model):
        """Loads the last backup into `model` (compiled, optimizer built here)
        and returns the epoch to resume at (0 if there is no backup).
        `best.keras`/`last.keras` that are missing or unreadable are rebuilt
        from the backup, and `log.csv` from its history."""
        state = self.load_state()
        if state is None:
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        weights_path = os.path.join(self.backup_dir, state["weights"])
        try:
            model.load_weights(weights_path)
        except Exception as error:  # h5py/OS errors of a truncated or missing file
            raise ValueError(self._damaged(weights_path, error)) from None
        restore_seed_generator_states(model, state.get("seed_generators", []))
        self.history = state["history"]
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.epoch_seconds = state.get("epoch_seconds", [])
        if self.write:
            with distribute.writer_scope():
                self._repair_checkpoints(model, state)
            self._repair_log(state)
        return state["epoch"]

    def _repair_log(self, state):
        """Rewrites `log.csv` from the backup's history unless it holds it."""
        path = os.path.join(self.workdir, "log.csv")
        try:
            with open(path, newline="") as f:
                if f.read() == self._csv_text():
                    return
        except (OSError, UnicodeDecodeError):
            pass
        print(f"{path} is missing or differs from the backup: rewritten from its history ({state['epoch']} epochs).")
        self._write_csv()

    def _repair_checkpoints(self, model, state):
        """Rewrites `last.keras` (from the backup) and `best.keras` (from the
        backup's best weights) when either is missing or unreadable."""
        saved_model = self.saved_model if self.saved_model is not None else model
        last = os.path.join(self.workdir, "last.keras")
        if not is_loadable_keras_file(last):
            print(f"{last} is missing or damaged: rewritten from the backup of epoch {state['epoch']}.")
            record_created(self.workdir, "last.keras")
            replace_atomically(saved_model.save, last)
        best = os.path.join(self.workdir, "best.keras")
        if self.best_epoch is None or is_loadable_keras_file(best):
            return
        record_created(self.workdir, "best.keras")
        if self.best_epoch == state["epoch"]:
            replace_atomically(saved_model.save, best)
        elif distribute.num_processes() > 1:
            # Loading other weights into the model would be a collective of process 0 alone.
            print(f"{best} (epoch {self.best_epoch}) is missing or damaged: a multi-process run does not "
                  "rebuild it; the same command on one process does. last.keras and the metrics are intact.")
            return
        else:
            best_weights = os.path.join(self.backup_dir, best_weights_name(self.best_epoch))
            if not os.path.exists(best_weights):
                print(
                    f"{best} (epoch {self.best_epoch}) is missing or damaged and this run's backup has no "
                    f"best weights ({best_weights}): it cannot be restored; last.keras and the metrics are intact."
                )
                return
            current = saved_model.get_weights()
            saved_model.load_weights(best_weights)
            replace_atomically(saved_model.save, best)
            saved_model.set_weights(current)
        print(f"{best} was missing or damaged: rewritten from the backup (epoch {self.best_epoch}).")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()
        self._batch_times = []

    def on_train_batch_end(self, batch, logs=None):
        self._batch_times.append(time.time())

    def train_images_per_second(self, batch_size):
        """Training throughput of the last epoch, from the end of its first
        step to the end of its last (compilation and evaluation excluded)."""
        times = getattr(self, "_batch_times", [])
        if len(times) < 2:
            return None
        return (len(times) - 1) * batch_size / (times[-1] - times[0])

    def on_epoch_end(self, epoch, logs=None):
        saved_model = self.saved_model if self.saved_model is not None else self.model
        # Nothing of an epoch whose weights are non-finite is written: the
        # folder keeps the last finite epoch (`StopOnDivergence` stops most
        # such runs earlier, from the loss).
        if not (weights_are_finite(self.model) and weights_are_finite(saved_model)):
            # (The step: the epoch's last; with a finite loss until then, its update.)
            steps = len(getattr(self, "_batch_times", [])) or None
            error = TrainingDiverged(epoch + 1, step=steps, source="weights", backup_epoch=backup_epoch(self.workdir))
            if self.write:
                record_divergence(self.workdir, error)
            raise error
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.epoch_seconds.append(time.time() - self._epoch_start)
        self.history.append({"epoch": epoch + 1, **logs})
        value = logs.get(self.monitor)
        improved = value is not None and (self.best is None or value > self.best)
        if not self.write:
            if improved:
                self.best, self.best_epoch = value, epoch + 1
            return
        with distribute.writer_scope():
            self._write_epoch(epoch, saved_model, improved, value)

    def _write_epoch(self, epoch, saved_model, improved, value):
        record_created(self.workdir, "backup", "last.keras", *(["best.keras"] if improved else []))
        os.makedirs(self.backup_dir, exist_ok=True)
        if improved:
            self.best, self.best_epoch = value, epoch + 1
            replace_atomically(saved_model.save, os.path.join(self.workdir, "best.keras"))
            # The backup keeps the best epoch's weights too: a lost best.keras is rebuilt from them.
            # (named by epoch: a kill before the state commit never pairs them with another epoch)
            replace_atomically(saved_model.save_weights, os.path.join(self.backup_dir, best_weights_name(epoch + 1)))
        replace_atomically(saved_model.save, os.path.join(self.workdir, "last.keras"))
        self._write_csv()

        # Backup last: the state file is the commit point of the epoch.
        weights_name = f"epoch_{epoch + 1}.weights.h5"
        replace_atomically(self.model.save_weights, os.path.join(self.backup_dir, weights_name))
        state = {
            "epoch": epoch + 1,
            "weights": weights_name,
            "history": self.history,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "epoch_seconds": self.epoch_seconds,
            "seed_generators": seed_generator_states(self.model),
        }
        write_text_atomically(self.state_path, json.dumps(state, indent=1))
        for name in os.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name not in (weights_name, best_weights_name(self.best_epoch)):
                remove_path(os.path.join(self.backup_dir, name))

    def _csv_text(self):
        keys = ["epoch"] + sorted({k for row in self.history for k in row} - {"epoch"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        return buffer.getvalue()

    def _write_csv(self):
        record_created(self.workdir, "log.csv")
        write_text_atomically(os.path.join(self.workdir, "log.csv"), self._csv_text())


class EpochTimeEstimate(keras.callbacks.Callback):
    """Prints once how long an epoch and the run will take at this speed:
    after the first few steps (the first step, which compiles, left out),
    or after the second epoch when an epoch has fewer steps than that.

    Args:
        steps_per_epoch: the steps of one epoch.
        epochs: the epochs this process will run.
        measured_steps: the steps timed after the first.
    """

    def __init__(self, steps_per_epoch, epochs, measured_steps=5):
        super().__init__()
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.measured_steps = measured_steps
        self._start, self._done, self._epochs_seen = None, epochs < 2 and steps_per_epoch <= measured_steps, 0

    def on_epoch_begin(self, epoch, logs=None):
        if self._epochs_seen == 1 and not self._done:
            self._start = time.perf_counter()  # the second epoch: compiled

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_seen += 1
        if self._epochs_seen == 2 and not self._done:
            self._report(time.perf_counter() - self._start, "the second epoch")

    def on_train_batch_end(self, batch, logs=None):
        if self._done or self._epochs_seen or self.steps_per_epoch <= self.measured_steps:
            return
        if self._start is None:
            self._start = time.perf_counter()  # after step 1 (compilation)
        elif batch >= self.measured_steps:
            per_step = (time.perf_counter() - self._start) / batch
            self._report(per_step * self.steps_per_epoch, f"steps 2-{batch + 1}: {per_step:.3g} s/step")

    def _report(self, epoch_seconds, source):
        print(f"\nabout {_duration(epoch_seconds)} per epoch, {_duration(epoch_seconds * self.epochs)} for "
              f"{self.epochs} epoch(s) (timed on {source})", flush=True)
        self._done = True


def _duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
