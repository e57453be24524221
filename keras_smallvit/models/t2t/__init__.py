from keras_smallvit.models.t2t.t2t_backbone import T2TBackbone
from keras_smallvit.models.t2t.t2t_layers import ClassTokenAndSinusoidalPositionEmbedding
from keras_smallvit.models.t2t.t2t_layers import PatchShifting
from keras_smallvit.models.t2t.t2t_layers import SoftSplit
from keras_smallvit.models.t2t.t2t_layers import T2TAttention
from keras_smallvit.models.t2t.t2t_layers import T2TBlock
from keras_smallvit.models.t2t.t2t_layers import TokenTransformer
