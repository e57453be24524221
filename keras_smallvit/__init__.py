"""keras_smallvit: Vision Transformers trained from scratch on small datasets, in Keras 3."""

import sys as _sys

if _sys.argv[:1] == ["-m"]:
    # `python -m keras_smallvit.export ...`: this package (and Keras, and
    # TensorFlow) is imported before that command line's `main` runs (only
    # while `-m` locates its module is `sys.argv[0]` "-m"): its console
    # set-up comes first, as in every command line.
    from keras_smallvit.utils.console import quiet_frameworks as _quiet_frameworks

    _quiet_frameworks(verbose="--verbose" in _sys.argv)

from keras_smallvit import data
from keras_smallvit import layers
from keras_smallvit import models
from keras_smallvit import optimizers
from keras_smallvit.export import export_for_serving
from keras_smallvit.models import create_model
from keras_smallvit.models import list_models

__version__ = "0.1.0"
