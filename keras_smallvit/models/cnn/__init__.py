from keras_smallvit.models.cnn.cnn_common import load_weights_file
from keras_smallvit.models.cnn.efficientnet import EfficientNet
from keras_smallvit.models.cnn.resnet import ResNet
from keras_smallvit.models.cnn.resnet import ZeroPadShortcut
from keras_smallvit.models.cnn.imagenet import WeightsUnavailableError
