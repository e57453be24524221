from keras_smallvit.models.swin.swin_backbone import SwinBackbone
from keras_smallvit.models.swin.swin_layers import AbsolutePositionEmbedding
from keras_smallvit.models.swin.swin_layers import PatchMerging
from keras_smallvit.models.swin.swin_layers import SwinTransformerBlock
from keras_smallvit.models.swin.swin_layers import WindowAttention
