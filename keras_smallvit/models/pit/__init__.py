from keras_smallvit.models.pit.pit_backbone import PiTBackbone
from keras_smallvit.models.pit.pit_layers import DepthwiseConvPooling
