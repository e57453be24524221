from keras_smallvit.models.cait.cait_backbone import CaiTBackbone
from keras_smallvit.models.cait.cait_layers import CaiTBlock
from keras_smallvit.models.cait.cait_layers import ClassToken
from keras_smallvit.models.cait.cait_layers import LayerScale
from keras_smallvit.models.cait.cait_layers import LearnedPositionEmbedding
from keras_smallvit.models.cait.cait_layers import TalkingHeadsAttention
