"""`AttentionDiagnostics`: the attention statistics of a fixed batch after
every epoch, to TensorBoard and to per-epoch JSON files."""

import json
import math
import os
import re
import time

import keras
import numpy as np

from keras_smallvit.diagnostics.probe import AttentionProber
from keras_smallvit.diagnostics.probe import resolve_backbone
from keras_smallvit.diagnostics.report import attention_report
from keras_smallvit.utils.files import write_text_atomically
from keras_smallvit.utils.validation import check_positive_int

DIAGNOSTICS_FOLDER = "diagnostics"
HISTOGRAM_BINS = 32  # of log10 weights over [-8, 0]


def epoch_file_name(epoch):
    """`epoch_003.json` for the 1-based epoch 3."""
    return f"epoch_{epoch:03d}.json"


def read_epoch_reports(run_dir):
    """The per-epoch dicts a run's `AttentionDiagnostics` wrote (in
    `run_dir/diagnostics/`), in epoch order; `[]` when there are none."""
    folder = os.path.join(run_dir, DIAGNOSTICS_FOLDER)
    if not os.path.isdir(folder):
        return []
    # `epoch_NNN.json` only: not a half-written `epoch_NNN.partial.json` left by a kill.
    names = sorted(n for n in os.listdir(folder) if re.fullmatch(r"epoch_\d+\.json", n))
    reports = []
    for name in names:
        with open(os.path.join(folder, name)) as f:
            reports.append(json.load(f))
    return sorted(reports, key=lambda r: r["epoch"])


def _tag(layer):
    return f"{layer['index']:02d}_{layer['name']}"


class AttentionDiagnostics(keras.callbacks.Callback):
    """Attention statistics of a fixed batch of images after each epoch.

    On each `every`-th epoch end it probes `images` once (one forward pass in
    inference mode, see `probe_attention`), computes `attention_report`,
    and:
    - with `log_dir`, logs to TensorBoard (`tf.summary`; TensorFlow is
      installed on every backend): per layer the mean temperature `tau`, KL
      from uniform, entropy, density (normalised entropy), row maximum and
      trivial mass before (and after) SATA, SATA's `s`; histograms of
      `log10` attention weights before and after SATA; the callback's own
      seconds. The step is the 0-based epoch, as Keras's TensorBoard.
    - with `run_dir`, writes the report plus `epoch` (1-based), `seconds`
      (this callback's cost for the epoch, TensorBoard writes included) and,
      for an AAL distiller, `aal` (`link_magnitudes`, `teacher_block_names`)
      to `run_dir/diagnostics/epoch_<epoch:03d>.json`, written atomically.

    Training is untouched: no extra forward pass runs inside the training
    steps, only this one per diagnosed epoch. `python -m training.figures
    --run` plots the per-epoch files.

    Args:
        images: `(B, H, W, C)` float images in the model's input range (a
            small fixed batch, e.g. 16 test images).
        log_dir: TensorBoard folder, or None.
        run_dir: run folder for the JSON files, or None.
        model: the model to diagnose; None = the model being fit (the
            student when that is an `aal.AttentionLinkDistiller`).
        every: diagnose every `every` epochs (and always the last one run).
        threshold: SATA's `t` for the trivial-attention statistics (None =
            each layer's own; 0.1 without SATA).
        histograms: log the attention-weight histograms to TensorBoard.
    """

    def __init__(self, images, log_dir=None, run_dir=None, model=None, every=1, threshold=None, histograms=True):
        super().__init__()
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"Invalid `images` of shape {images.shape}: expected (B, H, W, C) with B >= 1.")
        self.images = images
        self.log_dir = log_dir
        self.run_dir = run_dir
        self.every = check_positive_int("every", every)
        self.threshold = threshold
        self.histograms = bool(histograms)
        self.diagnosed_model = model
        if model is not None:
            resolve_backbone(model)  # fail now, not after the first epoch
        self.last_report = None
        self._prober = None
        self._writer = None

    def _target(self):
        if self.diagnosed_model is not None:
            return self.diagnosed_model
        return self.model.student if hasattr(self.model, "link_magnitudes") else self.model

    def on_train_begin(self, logs=None):
        if self._prober is None:
            self._prober = AttentionProber(self._target())

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if isinstance(getattr(self, "params", None), dict) else None
        if (epoch + 1) % self.every and (last is None or epoch + 1 != last):
            return
        self.diagnose(epoch)

    def diagnose(self, epoch):
        """Probes, logs and writes epoch `epoch` (0-based); returns the report."""
        start = time.perf_counter()
        target = self._target()
        if self._prober is None:
            self._prober = AttentionProber(target)
        probe = self._prober(self.images)
        report = attention_report(target, probe=probe, threshold=self.threshold)
        report["epoch"] = epoch + 1
        if self.model is not None and hasattr(self.model, "link_magnitudes"):
            report["aal"] = {
                "link_magnitudes": np.asarray(self.model.link_magnitudes(), dtype=np.float64).tolist(),
                "teacher_block_names": list(self.model.teacher_block_names),
            }
        if self.log_dir is not None:
            self._log(report, probe, epoch)
        report["seconds"] = time.perf_counter() - start
        if self.log_dir is not None:
            self._scalar("diagnostics/seconds", report["seconds"], epoch)
            self._writer.flush()
        if self.run_dir is not None:
            folder = os.path.join(self.run_dir, DIAGNOSTICS_FOLDER)
            os.makedirs(folder, exist_ok=True)
            write_text_atomically(os.path.join(folder, epoch_file_name(epoch + 1)), json.dumps(report, indent=1))
        self.last_report = report
        return report

    # --- TensorBoard (tf.summary works whatever the Keras backend) ---

    def _scalar(self, name, value, step):
        import tensorflow as tf

        if value is not None and math.isfinite(value):
            with self._writer.as_default():
                tf.summary.scalar(name, float(value), step=step)

    def _log(self, report, probe, epoch):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        for layer in report["layers"]:
            tag = _tag(layer)
            trivial = layer["trivial"]
            self._scalar(f"temperature/{tag}", layer["temperature"]["tau_mean"], epoch)
            self._scalar(f"kl_from_uniform/{tag}", layer["kl_from_uniform"]["mean"], epoch)
            self._scalar(f"entropy/{tag}", layer["entropy"]["mean"], epoch)
            self._scalar(f"density/{tag}", layer["normalized_entropy"]["mean"], epoch)
            self._scalar(f"trivial_mass_before/{tag}", trivial["mass_before"]["mean"], epoch)
            self._scalar(f"row_max/{tag}", trivial["row_max"]["mean"], epoch)
            if trivial["mass_after"] is not None:
                self._scalar(f"trivial_mass_after/{tag}", trivial["mass_after"]["mean"], epoch)
            if layer["sata"] is not None:
                self._scalar(f"sata_scale/{tag}", layer["sata"]["scale"], epoch)
        if self.histograms:
            for layer in probe.layers:
                tag = f"{layer.index:02d}_{layer.name}"
                self._histogram(f"log10_weight_before/{tag}", layer.before, epoch)
                if layer.has_suppression:
                    self._histogram(f"log10_weight_after/{tag}", layer.after, epoch)

    def _histogram(self, name, weights, step):
        """A TensorBoard histogram of `log10` attention weights (1e-8 standing for
        the masked zeros), binned with NumPy: `tf.summary.histogram` bins on
        TensorFlow and took ~0.9 s per layer of a full-size ViT batch here."""
        import tensorflow as tf
        from tensorboard.plugins.histogram import metadata

        counts, edges = np.histogram(np.log10(np.maximum(weights, 1e-8)), bins=HISTOGRAM_BINS, range=(-8.0, 0.0))
        # The histogram plugin's format: one (left edge, right edge, count) row per bin.
        tensor = np.stack([edges[:-1], edges[1:], counts], axis=1).astype(np.float64)
        with self._writer.as_default():
            tf.summary.write(name, tensor, step=step, metadata=metadata.create_summary_metadata(name, ""))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
