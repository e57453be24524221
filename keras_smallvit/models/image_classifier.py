"""Image classifier head on any token backbone of this package."""

import keras
from keras import ops

from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range
from keras_smallvit.utils.layers import keep_dtype_policy
from keras_smallvit.models.usage import ClassifierUsageMixin

POOLING_MODES = ("class_token", "average")


@keras.saving.register_keras_serializable(package="keras_smallvit")
class TokenPooling(keras.layers.Layer):
    """`(B, T, D) -> (B, D)`: the first (class) token, or the mean of the
    tokens after `num_prefix_tokens`.

    Args:
        mode: `"class_token"` or `"average"`.
        num_prefix_tokens: tokens before the visual tokens (excluded from the average).
    """

    def __init__(self, mode="class_token", num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, POOLING_MODES)
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, tokens):
        if self.mode == "class_token":
            return tokens[:, 0]
        return ops.mean(tokens[:, self.num_prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, num_prefix_tokens=self.num_prefix_tokens)
        return config


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ImageClassifier(ClassifierUsageMixin, keras.Model):
    """Backbone -> token pooling -> LayerNorm -> (dropout) -> Dense logits.

    The head of the small-dataset papers: LayerNorm and a Dense on the class
    token. Logits are float32 under mixed precision (the last Dense runs in
    float32). With `norm_before_pooling` the LayerNorm acts on every token
    before the pooling (Swin's head: norm, then average; the same parameters).

    Args:
        backbone: a backbone of this package (its output has
            `"sequence_output"`; its `attention_model()` adds the maps).
        num_classes: number of classes.
        pooling: `"class_token"` or `"average"`.
        head_dropout: dropout before the last Dense.
        layer_norm_epsilon: epsilon of the head's LayerNorm.
        norm_before_pooling: apply the LayerNorm to the tokens before pooling
            them (same result for `"class_token"` pooling, not for `"average"`).
        dtype: dtype policy of the head layers (the backbone keeps its own).
        preprocessing: how raw uint8 images become this model's input
            (`{"scale", "mean", "std", "resize"}`, see
            `keras_smallvit.models.usage`), or None (unknown: a training run
            sets it). Saved with the model; used by `predict_images` and the
            serving export.
        class_names: the names of the classes in label order, or None.
    """

    def __init__(
        self,
        backbone,
        num_classes,
        pooling="class_token",
        head_dropout=0.0,
        layer_norm_epsilon=1e-5,
        norm_before_pooling=False,
        dtype=None,
        preprocessing=None,
        class_names=None,
        **kwargs,
    ):
        check_positive_int("num_classes", num_classes)
        check_choice("pooling", pooling, POOLING_MODES)
        check_range("head_dropout", head_dropout, 0.0, 1.0, high_inclusive=False)
        # === Layers === (assigned to self after the functional init: torch
        # modules cannot be set as attributes before it)
        dtype = dtype if dtype is not None else backbone.dtype_policy
        pooling_layer = TokenPooling(
            pooling, getattr(backbone, "num_prefix_tokens", 1), dtype=dtype, name="pooling"
        )
        head_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="head_norm")
        head_dropout_layer = keras.layers.Dropout(head_dropout, dtype=dtype, name="head_dropout")
        classifier = keras.layers.Dense(num_classes, dtype="float32", name="logits")

        def head(sequence_output):
            if norm_before_pooling:
                x = pooling_layer(head_norm(sequence_output))
            else:
                x = head_norm(pooling_layer(sequence_output))
            return classifier(head_dropout_layer(x))

        # === Functional model ===
        images = keras.Input(shape=backbone.input_shape[1:], name="images")
        logits = head(backbone(images)["sequence_output"])
        super().__init__(inputs=images, outputs=logits, dtype=dtype, **kwargs)
        keep_dtype_policy(self, dtype)
        self.backbone = backbone
        self.pooling_layer = pooling_layer
        self.head_norm = head_norm
        self.head_dropout_layer = head_dropout_layer
        self.classifier = classifier
        self._head = head

        # === Config ===
        self.num_classes = num_classes
        self.pooling = pooling
        self.head_dropout = head_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.norm_before_pooling = bool(norm_before_pooling)
        self.init_usage(preprocessing, class_names)

    def attention_model(self, return_attention_scores=True):
        """A model sharing this one's weights that returns, from one forward pass,
        `{"logits", "attention_maps"}` plus `"class_token_attention"` when the
        backbone has class-token maps on a patch grid (its
        `class_token_attention(maps)` method returns a list, not None). The
        classifier itself computes no map (its attention may take the fused
        form); its logits equal this model's.

        Args:
            return_attention_scores: True (the maps that multiply the values)
                or `"all"`: each map is its layer's dict of maps before and
                after SATA (see `Backbone.attention_model`).
        """
        images = keras.Input(shape=self.backbone.input_shape[1:], name="images")
        outputs = self.backbone.attention_model(return_attention_scores)(images)
        maps = outputs["attention_maps"]
        results = {"logits": self._head(outputs["sequence_output"]), "attention_maps": maps}
        weights = [m["weights"] for m in maps] if return_attention_scores == "all" else maps
        class_maps = self.backbone.class_token_attention(weights)
        if class_maps is not None:
            results["class_token_attention"] = class_maps
        return keras.Model(images, results, name=f"{self.name}_with_attention")

    @classmethod
    def from_preset(cls, name_or_path, **kwargs):
        """A classifier from a registry name, a preset folder or a run folder (keras-hub style).

        - a name of `keras_smallvit.list_models()`: a fresh model (random
          weights); `kwargs` are `create_model`'s (`num_classes`,
          `image_size` required, overrides);
        - a preset folder written by `save_to_preset`: its config, weights and
          serving preprocessing;
        - a finished run folder of `training.train`: its `best.keras` (else
          `last.keras`) and the preprocessing its `config.json` records.

        The loaded model's `preprocessing` attribute is the serving
        preprocessing `{"scale", "mean", "std"}` (`(x * scale - mean) / std` on
        raw pixels; `export_for_serving(model, path, **model.preprocessing)`).
        Existing `.keras` files load with `keras.saving.load_model` as before.
        """
        from keras_smallvit.models.preset_folder import load_preset

        return load_preset(name_or_path, **kwargs)

    def save_to_preset(self, path, preprocessing=None):
        """Writes this model as a preset folder `path` (config, weights,
        serving preprocessing) for `from_preset`. Written under a temporary
        name and renamed into place; refuses (`FileExistsError` naming it) a
        `path` that is not missing, empty or a previous preset folder.

        Args:
            path: the folder.
            preprocessing: `{"scale", "mean", "std"}`; None: this model's
                `preprocessing` (from `from_preset`), else `x / 255`.
        """
        from keras_smallvit.models.preset_folder import save_preset

        return save_preset(self, path, preprocessing)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "head_dropout": self.head_dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "norm_before_pooling": self.norm_before_pooling,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            **self.usage_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
