"""EfficientNet (Keras Applications graph) with a small-dataset head: the
EfficientNet-B0 baseline and the EfficientNet-B3 attention-link teacher."""

import re

import keras

from keras_smallvit.models.usage import ClassifierUsageMixin
from keras_smallvit.models.cnn.cnn_common import FeatureMapsMixin
from keras_smallvit.models.cnn.cnn_common import check_image_size
from keras_smallvit.models.cnn.imagenet import load_efficientnet_imagenet_weights
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range
from keras_smallvit.utils.layers import keep_dtype_policy
from keras_smallvit.utils.model_arguments import check_model_kwargs

# variant -> (keras.applications constructor name, top dropout of the paper / Keras)
EFFICIENTNET_VARIANTS = {
    "b0": ("EfficientNetB0", 0.2),
    "b1": ("EfficientNetB1", 0.2),
    "b2": ("EfficientNetB2", 0.3),
    "b3": ("EfficientNetB3", 0.3),
    "b4": ("EfficientNetB4", 0.4),
    "b5": ("EfficientNetB5", 0.4),
    "b6": ("EfficientNetB6", 0.5),
    "b7": ("EfficientNetB7", 0.5),
}
NUM_STAGES = 7
# Keras Applications refuse inputs below 32 px.
MIN_IMAGE_SIZE = 32


@keras.saving.register_keras_serializable(package="keras_smallvit")
class EfficientNet(ClassifierUsageMixin, FeatureMapsMixin, keras.Model):
    """EfficientNet-B0...B7 from `keras.applications` with a classifier
    head, as one functional model (random initialisation; ImageNet weights
    with `load_imagenet_weights()` or `create_model(..., weights="imagenet")`).

    images in `[0, 1]` -> `* input_scale` -> the Keras Applications graph
    without its top (its built-in `Rescaling(1/255)` and `Normalization`,
    stem, 7 stages of MBConv blocks, 1x1 top conv) -> global average pooling
    -> dropout -> Dense logits (float32, also under mixed precision).

    Images are channels-last `(B, H, W, C)` (Keras Applications follow
    `keras.config.image_data_format()`, which must be `"channels_last"`).

    Input range: Keras' EfficientNets expect pixels in `[0, 255]` and divide
    by 255 themselves; this library's data are floats in `[0, 1]`, hence
    `input_scale=255` by default (use 1 for `[0, 255]` inputs). Without
    ImageNet statistics loaded, the `Normalization` layer is the identity
    (mean 0, variance 1), so the network sees `[0, 1]`.

    Pretrained weights: `weights="imagenet"` (`create_model`) reads
    `keras.applications`' ImageNet file of the variant (`include_top=False`:
    the head stays new) from Keras' cache, downloading it there once if it is
    absent (`load_imagenet_weights`); the network then computes what
    `keras.applications.EfficientNetB*(weights="imagenet")` does, ImageNet
    mean/std normalisation included, on `[0, 1]` images (`input_scale` 255).
    A local Keras 3 file of this model: `weights=path` or
    `load_weights_file(model, path)`.

    Stage outputs (`stage_output_names`) are the last layer of each of the 7
    stages (`"block{i}{letter}_add"`, or `"..._project_bn"` for a one-block
    stage); `"top_activation"` is the last feature map. At 32 px the
    resolution is /2, /4, /8, /16, /16, /32, /32 (1x1 at the end).

    Args:
        variant: `"b0"` ... `"b7"`.
        num_classes: classes of the Dense head.
        image_size: int or `(height, width)`, at least 32.
        num_channels: input channels.
        dropout: dropout before the Dense head; None for the variant's
            Keras/paper default (B0 0.2, B3 0.3).
        input_scale: multiplies the images before the Keras graph (255 for
            `[0, 1]` images).
        dtype: dtype policy of every layer but the float32 logits layer.
        preprocessing: raw uint8 images -> this model's input (see
            `keras_smallvit.models.usage`), or None (unknown).
        class_names: the names of the classes in label order, or None.
    """

    def __init__(
        self,
        variant="b0",
        num_classes=10,
        image_size=32,
        num_channels=3,
        dropout=None,
        input_scale=255.0,
        dtype=None,
        preprocessing=None,
        class_names=None,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)  # before the build
        check_choice("variant", variant, tuple(EFFICIENTNET_VARIANTS))
        check_positive_int("num_classes", num_classes)
        image_hw = check_image_size(image_size, MIN_IMAGE_SIZE)
        check_positive_int("num_channels", num_channels)
        application_name, default_dropout = EFFICIENTNET_VARIANTS[variant]
        dropout = default_dropout if dropout is None else dropout
        check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        check_range("input_scale", input_scale, 0.0, None, low_inclusive=False)
        if keras.config.image_data_format() != "channels_last":
            raise ValueError(
                "EfficientNet takes channels-last images: `keras.config.image_data_format()` is "
                f"{keras.config.image_data_format()!r}. Allowed values: 'channels_last'."
            )

        # === Functional model ===
        images = keras.Input(shape=(*image_hw, num_channels), name="images")
        scaled = keras.layers.Rescaling(input_scale, dtype=dtype, name="input_scaling")(images)
        # Keras Applications create their layers with the global dtype policy:
        # switch it to ours for the duration of the build.
        previous_policy = keras.config.dtype_policy()
        if dtype is not None:
            keras.config.set_dtype_policy(dtype)
        try:
            application = getattr(keras.applications, application_name)(
                include_top=False, weights=None, input_tensor=scaled
            )
        finally:
            keras.config.set_dtype_policy(previous_policy)
        features = application.outputs[0]
        x = keras.layers.GlobalAveragePooling2D(dtype=dtype, name="avg_pool")(features)
        x = keras.layers.Dropout(dropout, dtype=dtype, name="head_dropout")(x)
        logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
        super().__init__(inputs=images, outputs=logits, dtype=dtype, **kwargs)
        keep_dtype_policy(self, dtype)

        # === Config ===
        names = [layer.name for layer in self.layers]
        self.stage_output_names = tuple(
            [n for n in names if re.match(rf"block{i}[a-z]+_", n)][-1] for i in range(1, NUM_STAGES + 1)
        )
        self.variant = variant
        self.num_classes = num_classes
        self.image_size = image_hw
        self.num_channels = num_channels
        self.dropout = dropout
        self.input_scale = input_scale
        self.init_usage(preprocessing, class_names)

    def load_imagenet_weights(self):
        """Loads `keras.applications`' ImageNet weights of this variant (the
        `include_top=False` file; the Dense head keeps its weights) from
        Keras' cache (`$KERAS_HOME/models`, default `~/.keras/models`),
        downloading the file there first if it is absent.

        Returns:
            This model.

        Raises:
            WeightsUnavailableError: not cached and no download possible (the
                message names the URL, the cache path and the alternatives).
        """
        return load_efficientnet_imagenet_weights(self, self.variant)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "variant": self.variant,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "num_channels": self.num_channels,
            "dropout": self.dropout,
            "input_scale": self.input_scale,
            **self.usage_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
