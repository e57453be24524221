"""Backbones, the classifier head and the model registry."""

from keras_smallvit.models.attention_maps import class_token_attention
from keras_smallvit.models.image_classifier import ImageClassifier
from keras_smallvit.models.image_classifier import TokenPooling
from keras_smallvit.models.registry import TECHNIQUES
from keras_smallvit.models.registry import create_model
from keras_smallvit.models.registry import list_models
from keras_smallvit.models.registry import register_model
from keras_smallvit.models.vit import ViTBackbone
from keras_smallvit.models.pit import PiTBackbone
from keras_smallvit.models.swin import SwinBackbone
from keras_smallvit.models.cait import CaiTBackbone
from keras_smallvit.models.t2t import T2TBackbone
from keras_smallvit.models.cnn import EfficientNet, ResNet
from keras_smallvit.models import presets  # noqa: F401 (registers the variants)
