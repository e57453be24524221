"""ResNets with basic blocks: the CIFAR ResNet-56/110 baselines and the
ResNet-34 attention-link teacher."""

import keras
from keras import ops

from keras_smallvit.models.usage import ClassifierUsageMixin
from keras_smallvit.models.cnn.cnn_common import FeatureMapsMixin
from keras_smallvit.models.cnn.cnn_common import check_image_size
from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range
from keras_smallvit.utils.layers import keep_dtype_policy
from keras_smallvit.utils.model_arguments import check_model_kwargs

STEMS = ("cifar", "imagenet")
SHORTCUTS = ("zero_pad", "projection")


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ZeroPadShortcut(keras.layers.Layer):
    """Parameter-free shortcut ("option A" of He et al. 2016).

    Subsamples the input with `stride` (keeps rows/columns 0, s, 2s, ...) and
    zero-pads the channels to `filters`, half before and half after the input
    channels (the convention of the common CIFAR ResNet code).

    Args:
        filters: output channels (at least the input channels).
        stride: spatial subsampling factor.
    """

    def __init__(self, filters, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.stride = check_positive_int("stride", stride)

    def build(self, input_shape):
        if input_shape[-1] > self.filters:
            raise ValueError(
                f"Invalid `filters`: {self.filters} is fewer than the input channels "
                f"({input_shape[-1]}). Allowed values: >= {input_shape[-1]}."
            )

    def call(self, inputs):
        x = inputs[:, :: self.stride, :: self.stride, :]
        extra = self.filters - inputs.shape[-1]
        before = extra // 2
        return ops.pad(x, ((0, 0), (0, 0), (0, 0), (before, extra - before)))

    def compute_output_shape(self, input_shape):
        def subsampled(size):
            return None if size is None else -(-size // self.stride)

        return (input_shape[0], subsampled(input_shape[1]), subsampled(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, stride=self.stride)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ResNet(ClassifierUsageMixin, FeatureMapsMixin, keras.Model):
    """Residual network of basic blocks (He et al. 2016), functional, with its
    classifier head.

    stem -> stages of basic blocks (3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut,
    ReLU; the first block of every stage after the first halves the
    resolution) -> global average pooling -> dropout -> Dense logits (float32,
    also under mixed precision).

    Presets (see `keras_smallvit/models/presets.py`):
    - CIFAR ResNet-56 / ResNet-110: `stem="cifar"`, `stem_width=16`,
      `stage_widths=(16, 32, 64)`, 9 / 18 blocks per stage,
      `shortcut="zero_pad"` (option A: 0.85M / 1.7M parameters).
    - ResNet-34 (torchvision layout): `stem="imagenet"`, `stem_width=64`,
      `stage_widths=(64, 128, 256, 512)`, `stage_blocks=(3, 4, 6, 3)`,
      `shortcut="projection"` (option B). `stem="cifar"` is the usual
      small-image variant (3x3 conv, stride 1, no max-pool).

    Images are channels-last `(B, H, W, C)`. Stride-2 convolutions pad one pixel on every side like PyTorch (Keras'
    `"same"` would pad only after), so ported PyTorch weights give the same
    outputs. BatchNorm uses PyTorch's momentum (0.1, i.e. Keras 0.9) and
    epsilon (1e-5); convolutions start from He-normal weights (fan-out,
    untruncated, like torchvision). Images are taken as they come (the data module's [0, 1]
    floats): the first BatchNorm absorbs the scale.

    `stage_output_names` names the output of every stage and
    `feature_model()` returns them (or any layers) from one forward pass.

    Args:
        stage_blocks: basic blocks per stage.
        stage_widths: channels per stage (same length as `stage_blocks`).
        stem: `"cifar"` (3x3 conv, stride 1) or `"imagenet"` (7x7 conv,
            stride 2, then 3x3 max-pool, stride 2).
        stem_width: channels of the stem convolution.
        shortcut: `"zero_pad"` (option A: subsample + zero channels, no
            weights) or `"projection"` (option B: 1x1 conv + BN) where the
            shape changes; identity elsewhere.
        num_classes: classes of the Dense head.
        image_size: int or `(height, width)`.
        num_channels: input channels.
        dropout: dropout before the Dense head.
        batch_norm_momentum: Keras BatchNorm momentum.
        batch_norm_epsilon: BatchNorm epsilon.
        dtype: dtype policy of every layer but the float32 logits layer.
        preprocessing: raw uint8 images -> this model's input (see
            `keras_smallvit.models.usage`), or None (unknown).
        class_names: the names of the classes in label order, or None.
    """

    def __init__(
        self,
        stage_blocks=(9, 9, 9),
        stage_widths=(16, 32, 64),
        stem="cifar",
        stem_width=16,
        shortcut="zero_pad",
        num_classes=10,
        image_size=32,
        num_channels=3,
        dropout=0.0,
        batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-5,
        dtype=None,
        preprocessing=None,
        class_names=None,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)  # before the build
        # Validate everything up front so errors name the model's argument.
        image_hw = check_image_size(image_size)
        stage_blocks = tuple(check_positive_int("stage_blocks", b) for b in stage_blocks)
        stage_widths = tuple(check_positive_int("stage_widths", w) for w in stage_widths)
        if not stage_blocks or len(stage_blocks) != len(stage_widths):
            raise ValueError(
                f"Invalid `stage_widths`: {stage_widths!r}. Expected one width per "
                f"stage of `stage_blocks` {stage_blocks!r} (at least one stage)."
            )
        check_choice("stem", stem, STEMS)
        check_positive_int("stem_width", stem_width)
        check_choice("shortcut", shortcut, SHORTCUTS)
        check_positive_int("num_classes", num_classes)
        check_positive_int("num_channels", num_channels)
        check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        if shortcut == "zero_pad":
            widths = (stem_width,) + stage_widths
            if any(b < a for a, b in zip(widths, widths[1:])):
                raise ValueError(
                    f"Invalid `shortcut`: 'zero_pad' needs non-decreasing widths, got stem "
                    f"{stem_width} and stages {stage_widths!r}. Allowed values: 'projection' "
                    "for these widths."
                )

        def conv(filters, kernel_size, stride, name):
            layers = []
            if stride > 1 and kernel_size > 1:
                # PyTorch-style symmetric padding (Keras "same" pads after only).
                layers.append(
                    keras.layers.ZeroPadding2D(
                        kernel_size // 2, data_format="channels_last", dtype=dtype, name=f"{name}_pad"
                    )
                )
            padding = "valid" if stride > 1 else "same"
            layers.append(
                keras.layers.Conv2D(
                    filters,
                    kernel_size,
                    strides=stride,
                    padding=padding,
                    use_bias=False,
                    # PyTorch's kaiming_normal_(mode="fan_out"), as in torchvision.
                    kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
                    data_format="channels_last",
                    dtype=dtype,
                    name=name,
                )
            )
            return layers

        def batch_norm(name):
            return keras.layers.BatchNormalization(
                momentum=batch_norm_momentum, epsilon=batch_norm_epsilon, dtype=dtype, name=name
            )

        def relu(name):
            return keras.layers.ReLU(dtype=dtype, name=name)

        def apply(layers, x):
            for layer in layers:
                x = layer(x)
            return x

        # === Functional model ===
        images = keras.Input(shape=(*image_hw, num_channels), name="images")
        if stem == "imagenet":
            x = apply(conv(stem_width, 7, 2, "stem_conv"), images)
            x = relu("stem_relu")(batch_norm("stem_bn")(x))
            # Zero padding equals PyTorch's -inf padding here: inputs are >= 0 after ReLU.
            x = keras.layers.ZeroPadding2D(1, data_format="channels_last", dtype=dtype, name="stem_pool_pad")(x)
            x = keras.layers.MaxPooling2D(
                3, strides=2, data_format="channels_last", dtype=dtype, name="stem_pool"
            )(x)
        else:
            x = apply(conv(stem_width, 3, 1, "stem_conv"), images)
            x = relu("stem_relu")(batch_norm("stem_bn")(x))

        stage_output_names = []
        in_width = stem_width
        for s, (blocks, width) in enumerate(zip(stage_blocks, stage_widths), start=1):
            for b in range(1, blocks + 1):
                name = f"stage{s}_block{b}"
                stride = 2 if (b == 1 and s > 1) else 1
                residual = apply(conv(width, 3, stride, f"{name}_conv1"), x)
                residual = relu(f"{name}_relu1")(batch_norm(f"{name}_bn1")(residual))
                residual = apply(conv(width, 3, 1, f"{name}_conv2"), residual)
                residual = batch_norm(f"{name}_bn2")(residual)
                if stride == 1 and in_width == width:
                    shortcut_x = x
                elif shortcut == "zero_pad":
                    shortcut_x = ZeroPadShortcut(width, stride, dtype=dtype, name=f"{name}_shortcut")(x)
                else:
                    shortcut_x = apply(conv(width, 1, stride, f"{name}_shortcut_conv"), x)
                    shortcut_x = batch_norm(f"{name}_shortcut_bn")(shortcut_x)
                x = keras.layers.Add(dtype=dtype, name=f"{name}_add")([residual, shortcut_x])
                x = relu(f"{name}_out")(x)
                in_width = width
            stage_output_names.append(f"stage{s}_block{blocks}_out")

        x = keras.layers.GlobalAveragePooling2D(data_format="channels_last", dtype=dtype, name="avg_pool")(x)
        x = keras.layers.Dropout(dropout, dtype=dtype, name="head_dropout")(x)
        logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
        super().__init__(inputs=images, outputs=logits, dtype=dtype, **kwargs)
        keep_dtype_policy(self, dtype)

        # === Config ===
        self.stage_output_names = tuple(stage_output_names)
        self.stage_blocks = stage_blocks
        self.stage_widths = stage_widths
        self.stem = stem
        self.stem_width = stem_width
        self.shortcut = shortcut
        self.num_classes = num_classes
        self.image_size = image_hw
        self.num_channels = num_channels
        self.dropout = dropout
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.init_usage(preprocessing, class_names)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "stage_blocks": self.stage_blocks,
            "stage_widths": self.stage_widths,
            "stem": self.stem,
            "stem_width": self.stem_width,
            "shortcut": self.shortcut,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "num_channels": self.num_channels,
            "dropout": self.dropout,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            **self.usage_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
