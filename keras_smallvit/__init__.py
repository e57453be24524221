"""keras_smallvit: Vision Transformers trained from scratch on small datasets, in Keras 3."""

from keras_smallvit import data
from keras_smallvit import layers
from keras_smallvit import models
from keras_smallvit import optimizers
from keras_smallvit.export import export_for_serving
from keras_smallvit.models import create_model
from keras_smallvit.models import list_models

__version__ = "0.1.0"
