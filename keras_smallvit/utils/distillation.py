"""The settings of DeiT-style logit distillation, Keras-free: the training
config checks them before Keras is imported (the command line's preflight),
and `keras_smallvit.aal.LogitDistiller` with the same messages."""

import math
import numbers

from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_range

DISTILLATION_MODES = ("soft", "hard")
# DeiT's official code (facebookresearch/deit, main.py): `--distillation-alpha
# 0.5 --distillation-tau 1.0`. The DeiT paper's soft runs: tau 3, alpha 0.1.
DEFAULT_DISTILLATION_ALPHA = 0.5
DEFAULT_DISTILLATION_TAU = 1.0


def check_distillation_settings(mode, alpha, tau, names=("distillation", "distillation_alpha", "distillation_tau")):
    """Raises a `ValueError` naming the argument unless `mode` is "soft" or
    "hard", `alpha` a number in [0, 1] (None: not checked) and `tau` a
    finite number > 0.

    Args:
        mode, alpha, tau: the settings.
        names: how the caller names the three arguments (for the messages).

    Returns:
        `(mode, float(alpha), float(tau))`.
    """
    mode_name, alpha_name, tau_name = names
    check_choice(mode_name, mode, DISTILLATION_MODES)
    if alpha is not None:
        alpha = check_range(alpha_name, alpha, 0.0, 1.0)
    if (
        isinstance(tau, bool)
        or not isinstance(tau, numbers.Real)
        or not math.isfinite(tau)
        or not tau > 0
    ):
        raise ValueError(f"Invalid `{tau_name}`: {tau!r}. Expected a finite number > 0.")
    return mode, alpha, float(tau)
