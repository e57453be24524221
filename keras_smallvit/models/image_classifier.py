"""Image classifier head on any token backbone of this package."""

import keras
from keras import ops

from keras_smallvit.utils.validation import check_choice
from keras_smallvit.utils.validation import check_positive_int
from keras_smallvit.utils.validation import check_range
from keras_smallvit.utils.layers import keep_dtype_policy
from keras_smallvit.models.usage import ClassifierUsageMixin

POOLING_MODES = ("class_token", "average")
# `TokenPooling` modes: the classifier's, and DeiT's distillation token (the second token).
TOKEN_POOLING_MODES = POOLING_MODES + ("distillation_token",)


@keras.saving.register_keras_serializable(package="keras_smallvit")
class TokenPooling(keras.layers.Layer):
    """`(B, T, D) -> (B, D)`: the first (class) token, the second
    (DeiT's distillation token), or the mean of the tokens after
    `num_prefix_tokens`.

    Args:
        mode: `"class_token"`, `"distillation_token"` or `"average"`.
        num_prefix_tokens: tokens before the visual tokens (excluded from the average).
    """

    def __init__(self, mode="class_token", num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, TOKEN_POOLING_MODES)
        if self.mode == "distillation_token" and num_prefix_tokens < 2:
            raise ValueError(
                f"Invalid `num_prefix_tokens` {num_prefix_tokens} with mode 'distillation_token': the "
                "distillation token is the second prefix token. Allowed: num_prefix_tokens >= 2."
            )
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, tokens):
        if self.mode == "class_token":
            return tokens[:, 0]
        if self.mode == "distillation_token":
            return tokens[:, 1]
        return ops.mean(tokens[:, self.num_prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, num_prefix_tokens=self.num_prefix_tokens)
        return config


def check_distillation_head(distillation_head, backbone, pooling):
    """The `distillation_head` of an `ImageClassifier` as a bool (None: the
    backbone's `distillation_token`); a `ValueError` naming it when the
    backbone has no distillation token or the pooling is not the class token."""
    token = bool(getattr(backbone, "distillation_token", False))
    if distillation_head is None:
        distillation_head = token
    if not isinstance(distillation_head, bool):
        raise ValueError(f"Invalid `distillation_head` {distillation_head!r}. Allowed values: True, False, None.")
    if distillation_head and not token:
        raise ValueError(
            "Invalid `distillation_head` True: the backbone has no distillation token. Allowed: False, or a "
            "backbone built with `distillation_token=True` (ViTBackbone)."
        )
    if distillation_head and pooling != "class_token":
        raise ValueError(
            f"Invalid `pooling` {pooling!r} with a distillation head: DeiT's heads read the class and the "
            "distillation tokens. Allowed values: 'class_token'."
        )
    return distillation_head


@keras.saving.register_keras_serializable(package="keras_smallvit")
class ImageClassifier(ClassifierUsageMixin, keras.Model):
    """Backbone -> token pooling -> LayerNorm -> (dropout) -> Dense logits.

    The head of the small-dataset papers: LayerNorm and a Dense on the class
    token. Logits are float32 under mixed precision (the last Dense runs in
    float32). With `norm_before_pooling` the LayerNorm acts on every token
    before the pooling (Swin's head: norm, then average; the same parameters).

    Args:
        backbone: a backbone of this package (its output has
            `"sequence_output"` and `"attention_maps"`).
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
        distillation_head: DeiT's distillation head (Touvron et al. 2021): a
            second Dense on the backbone's distillation token (the head's
            LayerNorm shared, as DeiT's final norm acts on every token).
            The model's output is then the mean of the class head's and the
            distillation head's logits (DeiT at inference);
            `distillation_heads_model()` gives both for training (class head
            on the labels, distillation head on the teacher:
            `keras_smallvit.aal.LogitDistiller`). None: on when the backbone
            has a distillation token (`ViTBackbone(distillation_token=True)`).
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
        distillation_head=None,
        **kwargs,
    ):
        check_positive_int("num_classes", num_classes)
        check_choice("pooling", pooling, POOLING_MODES)
        distillation_head = check_distillation_head(distillation_head, backbone, pooling)
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
        distillation_pooling = distillation_classifier = None
        if distillation_head:
            distillation_pooling = TokenPooling(
                "distillation_token", backbone.num_prefix_tokens, dtype=dtype, name="distillation_pooling"
            )
            distillation_classifier = keras.layers.Dense(num_classes, dtype="float32", name="distillation_logits")

        def pooled_logits(sequence_output, pool, dense):
            if norm_before_pooling:
                x = pool(head_norm(sequence_output))
            else:
                x = head_norm(pool(sequence_output))
            return dense(head_dropout_layer(x))

        def heads(sequence_output):
            """`{"class_logits"[, "distillation_logits"]}` of the tokens."""
            logits = {"class_logits": pooled_logits(sequence_output, pooling_layer, classifier)}
            if distillation_head:
                logits["distillation_logits"] = pooled_logits(
                    sequence_output, distillation_pooling, distillation_classifier
                )
            return logits

        def head(sequence_output):
            logits = heads(sequence_output)
            if not distillation_head:
                return logits["class_logits"]
            # DeiT at inference: the mean of both heads.
            return (logits["class_logits"] + logits["distillation_logits"]) / 2.0

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
        if distillation_head:
            self.distillation_pooling = distillation_pooling
            self.distillation_classifier = distillation_classifier
        self._head = head
        self._heads = heads

        # === Config ===
        self.num_classes = num_classes
        self.pooling = pooling
        self.head_dropout = head_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.norm_before_pooling = bool(norm_before_pooling)
        self.distillation_head = distillation_head
        self.init_usage(preprocessing, class_names)

    def distillation_heads_model(self):
        """A model sharing this one's weights, from the same images to
        `{"class_logits", "distillation_logits"}` (DeiT's two heads, each
        `(B, num_classes)` float32), for training with a teacher; this
        model's own output is their mean. Raises a `ValueError` without a
        distillation head."""
        if not self.distillation_head:
            raise ValueError(
                f"{self.name!r} has no distillation head: build it on a backbone with `distillation_token=True` "
                "(e.g. create_model('deit_small_distilled', ...))."
            )
        images = keras.Input(shape=self.backbone.input_shape[1:], name="images")
        outputs = self._heads(self.backbone(images)["sequence_output"])
        return keras.Model(images, outputs, name=f"{self.name}_distillation_heads")

    def attention_model(self, return_attention_scores=True):
        """A model sharing this one's weights that returns, from one forward pass,
        `{"logits", "attention_maps"}` plus `"class_token_attention"` when the
        backbone has class-token maps on a patch grid (its
        `class_token_attention(maps)` method returns a list, not None).

        Args:
            return_attention_scores: True (the maps that multiply the values)
                or `"all"`: each map is its layer's dict of maps before and
                after SATA (see `Backbone.attention_model`).
        """
        images = keras.Input(shape=self.backbone.input_shape[1:], name="images")
        outputs = self.backbone.attention_model(return_attention_scores)(images)
        maps = outputs["attention_maps"]
        results = {"logits": self._head(outputs["sequence_output"]), "attention_maps": maps}
        if self.distillation_head:  # both heads too, for a distiller that trains them apart
            results.update(self._heads(outputs["sequence_output"]))
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
            "distillation_head": self.distillation_head,
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
