from keras_smallvit.models.vit import vit_presets  # registers the variants
from keras_smallvit.models.vit.vit_backbone import ViTBackbone
