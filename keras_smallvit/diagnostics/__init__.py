"""Attention diagnostics: the papers' analyses for your own model or run.

    from keras_smallvit import diagnostics
    probe = diagnostics.probe_attention(model, images)      # one forward pass
    report = diagnostics.attention_report(model, probe=probe)  # JSON-ready numbers
    maps = diagnostics.class_token_maps(probe)               # last layer + rollout
    diagnostics.plot_sharpness(report, path="sharpness.png")

- `probe_attention`: every attention layer's softmax before and after SATA
  (and the weights that multiply the values), per head, as NumPy arrays;
- `attention_report`: per layer and head, temperature (SPT/LSA Fig. 3),
  entropy and KL from uniform (Fig. 4), density (CB), trivial attention
  before/after SATA with histograms and SATA's `s` (SATA Figs. 1 and 3);
- `class_token_maps`: class-token attention of the last layer and the
  attention rollout on the patch grid (SPT/LSA Fig. 5);
- `statistics`: the NumPy definitions (`entropy`, `kl_from_uniform`,
  `normalized_entropy`, `trivial_attention`, `attention_histogram`,
  `attention_rollout`);
- `plots`: the figures (`plot_*`, also for AAL's link magnitudes and
  learning curves);
- `AttentionDiagnostics`: a Keras callback logging all of it per epoch to
  TensorBoard and JSON (`TrainConfig.diagnostics`, `--diagnostics`).

`python -m training.figures` writes every figure of a run or model as PNG.
"""

from keras_smallvit.diagnostics import plots
from keras_smallvit.diagnostics import statistics
from keras_smallvit.diagnostics.callback import AttentionDiagnostics
from keras_smallvit.diagnostics.callback import read_epoch_reports
from keras_smallvit.diagnostics.plots import plot_attention_density
from keras_smallvit.diagnostics.plots import plot_class_token_maps
from keras_smallvit.diagnostics.plots import plot_epochs
from keras_smallvit.diagnostics.plots import plot_learning_curves
from keras_smallvit.diagnostics.plots import plot_link_magnitudes
from keras_smallvit.diagnostics.plots import plot_sharpness
from keras_smallvit.diagnostics.plots import plot_temperatures
from keras_smallvit.diagnostics.plots import plot_trivial_attention
from keras_smallvit.diagnostics.probe import AttentionProbe
from keras_smallvit.diagnostics.probe import AttentionProber
from keras_smallvit.diagnostics.probe import LayerAttention
from keras_smallvit.diagnostics.probe import attention_blocks
from keras_smallvit.diagnostics.probe import attention_temperatures
from keras_smallvit.diagnostics.probe import probe_attention
from keras_smallvit.diagnostics.probe import resolve_backbone
from keras_smallvit.diagnostics.probe import suppression_scales
from keras_smallvit.diagnostics.report import attention_report
from keras_smallvit.diagnostics.report import class_token_maps
from keras_smallvit.diagnostics.statistics import attention_histogram
from keras_smallvit.diagnostics.statistics import attention_rollout
from keras_smallvit.diagnostics.statistics import entropy
from keras_smallvit.diagnostics.statistics import kl_from_uniform
from keras_smallvit.diagnostics.statistics import normalized_entropy
from keras_smallvit.diagnostics.statistics import trivial_attention
