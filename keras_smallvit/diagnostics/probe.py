"""The attention probe: every attention layer's softmax output before and
after SATA, and the weights the model multiplies the values with, from one
forward pass of a classifier (or backbone) of this package.

The backbones compute no map in their own graph (their attention may take
the fused form). The probe asks for the maps through the attention layers'
documented call mode: `attention_model(return_attention_scores="all")`
calls every block with `return_attention_scores="all"`, on the same layers
and weights, and each attention layer returns its probabilities before
SATA, after it and the weights that multiply the values (after SATA and,
in CaiT, the post-softmax talking-heads mixing; `MultiHeadSelfAttention`).
Nothing is patched. On JAX the probe runs
jit-compiled through `stateless_call` (JAX's eager mode compiles every op
on first use: ~8 s for a tiny ViT on a 2-core CPU, against ~2 s for one
compile).
"""

import dataclasses
from typing import Optional

import keras
import numpy as np
from keras import ops

from keras_smallvit.layers.attention import MultiHeadSelfAttention

LAYER_KINDS = ("self", "window", "class")


def _is_distiller(model):
    return hasattr(model, "student") and hasattr(model, "link_magnitudes")


def resolve_backbone(model):
    """`(classifier or None, backbone)` of `model`.

    Args:
        model: an `ImageClassifier` of this package, its transformer backbone,
            or an `aal.AttentionLinkDistiller` (its student is used).

    Raises:
        ValueError: for models without attention maps (CNNs), naming the
            allowed values.
    """
    if _is_distiller(model):
        model = model.student
    classifier, backbone = (model, model.backbone) if hasattr(model, "backbone") else (None, model)
    if not isinstance(backbone, keras.Model) or not callable(getattr(backbone, "attention_model", None)):
        name = getattr(model, "name", type(model).__name__)
        raise ValueError(
            f"Invalid `model`: {name!r} ({type(model).__name__}) has no attention maps (a CNN has no "
            "attention to diagnose). Allowed values: an ImageClassifier on a transformer backbone of "
            "this package (the vit, pit, swin, cait and t2t variants of `keras_smallvit.list_models()`), "
            "such a backbone, or an aal.AttentionLinkDistiller."
        )
    return classifier, backbone


def attention_blocks(model):
    """The backbone's layers that own an attention layer (`attention_layer`),
    in the order their maps appear in the `"attention_maps"` of its
    `attention_model()`.

    Args:
        model: see `resolve_backbone`.

    Returns:
        list of Keras layers (transformer blocks, CaiT blocks, T2T token
        transformers).
    """
    _, backbone = resolve_backbone(model)
    return [
        layer for layer in backbone.layers if isinstance(getattr(layer, "attention_layer", None), MultiHeadSelfAttention)
    ]


def _to_float(x):
    return float(ops.convert_to_numpy(x))


def attention_temperatures(model):
    """The softmax temperature of every attention layer, per head (SPT/LSA
    paper, Figure 3).

    Our layers multiply the scores by `scale_h` (`softmax(scale_h q k^T)`):
    the learned `temperature` weight with LSA's `learnable_temperature`, else
    the fixed `default_scale` (`head_dim ** -0.5` unless set, times the
    spec's `temperature_multiple`). The paper
    divides by a temperature `tau = 1 / scale_h`, initialised to
    `sqrt(head_dim)`; both are reported.

    Args:
        model: see `resolve_backbone`.

    Returns:
        list (one per attention layer, in map order) of dicts: `name`,
        `learnable` (bool), `scale` (per head), `tau` (per head, `1 /
        scale`), `tau_mean`, `initial_tau` (`1 / default_scale`).
    """
    result = []
    for block in attention_blocks(model):
        layer = block.attention_layer
        if layer.learnable_temperature:
            scale = ops.convert_to_numpy(layer.temperature).astype(np.float64)
        else:
            scale = np.full((layer.num_heads,), layer.default_scale, dtype=np.float64)
        tau = 1.0 / scale
        result.append({
            "name": block.name,
            "learnable": bool(layer.learnable_temperature),
            "scale": scale.tolist(),
            "tau": tau.tolist(),
            "tau_mean": float(tau.mean()),
            "initial_tau": float(1.0 / layer.default_scale),
        })
    return result


def suppression_scales(model):
    """SATA's learned `s` and threshold `t` per attention layer (SATA paper, Figure 3).

    Args:
        model: see `resolve_backbone`.

    Returns:
        list (one per attention layer, in map order) of dicts `name`,
        `scale` (`TrivialAttentionSuppression.scale`) and `threshold`, both
        None for a layer without SATA.
    """
    result = []
    for block in attention_blocks(model):
        layer = block.attention_layer
        if layer.suppression is None:
            result.append({"name": block.name, "scale": None, "threshold": None})
        else:
            sata = layer.suppression_layer
            result.append({"name": block.name, "scale": _to_float(sata.scale), "threshold": float(sata.threshold)})
    return result


@dataclasses.dataclass
class LayerAttention:
    """One attention layer's maps on the probed images (NumPy, float32).

    Attributes:
        index: position in the `"attention_maps"` of the backbone's
            `attention_model()`.
        name: the owning block's name.
        kind: `"self"` (`(B, heads, T, T)`), `"window"` (Swin, `(B,
            windows, heads, n, n)`) or `"class"` (CaiT class attention, `(B,
            heads, 1, N)`: the class token over the patches).
        stage: index of the run of consecutive layers with the same kind and
            token (or window) count (PiT/Swin stages; CaiT: patch layers 0,
            class layers 1; T2T: token transformers, then blocks).
        num_prefix_tokens: class tokens in front of the visual tokens among
            the keys (0 for window and class attention).
        grid: `(h, w)` of the visual keys, or None when unknown.
        before: per-head softmax probabilities after masking, before SATA.
        after: the same after SATA (`before` itself without SATA), before any
            post-softmax head mixing.
        weights: the weights that multiply the values
            (`after`, except in CaiT: after the talking-heads mixing).
        has_suppression: whether the layer has SATA.
        threshold: SATA's `t` (None without SATA).
    """

    index: int
    name: str
    kind: str
    stage: int
    num_prefix_tokens: int
    grid: Optional[tuple]
    before: np.ndarray
    after: np.ndarray
    weights: np.ndarray
    has_suppression: bool
    threshold: Optional[float]

    @property
    def head_axis(self):
        """Axis of the heads in `before`/`after`/`weights`."""
        return 2 if self.kind == "window" else 1

    @property
    def num_heads(self):
        return self.after.shape[self.head_axis]


@dataclasses.dataclass
class AttentionProbe:
    """Result of `probe_attention`.

    Attributes:
        backbone: the backbone's class name.
        images: the probed images `(B, H, W, C)`.
        logits: `(B, classes)` (None when a bare backbone was probed).
        layers: one `LayerAttention` per attention layer, in map order.
        grid_size: the backbone's patch grid (finest stage), or None.
    """

    backbone: str
    images: np.ndarray
    logits: Optional[np.ndarray]
    layers: list
    grid_size: Optional[tuple]


def _layouts(backbone, shapes):
    prefix = int(getattr(backbone, "num_prefix_tokens", 0) or 0)
    grids = [tuple(g) for g in getattr(backbone, "stage_grid_sizes", ()) or ()]
    if not grids and getattr(backbone, "grid_size", None) is not None:
        grids = [tuple(backbone.grid_size)]
    layouts, stage, previous = [], -1, None
    for shape in shapes:
        if len(shape) == 5:
            side = int(round(shape[-1] ** 0.5))
            kind, layer_prefix, grid = "window", 0, (side, side) if side * side == shape[-1] else None
            signature = (kind, shape[1], shape[-1])
        elif shape[-2] != shape[-1]:
            kind, layer_prefix = "class", 0
            grid = next((g for g in grids if g[0] * g[1] == shape[-1]), None)
            signature = (kind, shape[-1])
        else:
            kind, tokens = "self", shape[-1]
            grid = next((g for g in grids if g[0] * g[1] + prefix == tokens), None)
            layer_prefix = prefix if grid is not None else 0
            if grid is None:
                grid = next((g for g in grids if g[0] * g[1] == tokens), None)
            if grid is None:
                side = int(round(tokens**0.5))
                grid = (side, side) if side * side == tokens else None
            signature = (kind, tokens, layer_prefix)
        if signature != previous:
            stage, previous = stage + 1, signature
        layouts.append((kind, stage, layer_prefix, grid))
    return layouts


class AttentionProber:
    """Probes one model repeatedly (the callback's per-epoch use): builds the
    forward network once and, on JAX, compiles the probe once per image shape.

    Args:
        model: see `resolve_backbone`.
    """

    def __init__(self, model):
        self.classifier, self.backbone = resolve_backbone(model)
        self.blocks = attention_blocks(self.backbone)
        self.attention_layers = [block.attention_layer for block in self.blocks]
        # Every map before and after SATA; the classifier's gives the logits
        # too, a bare backbone has none.
        owner = self.classifier if self.classifier is not None else self.backbone
        self.network = owner.attention_model(return_attention_scores="all")
        self._compiled = {}  # JAX: compiled probe per image shape

    def _forward(self, images):
        return self.network(images, training=False)

    def _forward_jax(self, images):
        import jax  # the JAX backend only: see the module docstring

        trainable = [v.value for v in self.network.trainable_variables]
        non_trainable = [v.value for v in self.network.non_trainable_variables]
        compiled = self._compiled.get(images.shape)
        if compiled is None:
            network = self.network

            def forward(trainable, non_trainable, images):
                outputs, _ = network.stateless_call(trainable, non_trainable, images, training=False)
                return outputs

            lowered = jax.jit(forward).lower(trainable, non_trainable, images)
            try:
                # A diagnostic runs once per epoch: compile time matters, not run time
                # (tiny Swin on this CPU: 1.5 s at level 0 against 9.6 s by default).
                compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
            except Exception:  # an XLA build without that option
                compiled = lowered.compile()
            self._compiled[images.shape] = compiled
        return compiled(trainable, non_trainable, images)

    def __call__(self, images):
        """Probes `images` (`(B, H, W, C)`, the model's input range); returns
        an `AttentionProbe`."""
        images = np.asarray(images, dtype="float32")
        expected = tuple(self.backbone.input_shape[1:])
        if images.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
            raise ValueError(
                f"Invalid `images` of shape {images.shape}: the model takes (B, {', '.join(map(str, expected))})."
            )
        if keras.backend.backend() == "jax":
            outputs = self._forward_jax(images)
        else:
            outputs = self._forward(images)
        maps = outputs["attention_maps"]
        if len(maps) != len(self.attention_layers):
            raise RuntimeError(
                f"The probe got {len(maps)} attention maps for {len(self.attention_layers)} attention layers."
            )
        arrays = []
        for index, layer_maps in enumerate(maps):
            names = {"before": "before_suppression", "after": "after_suppression", "weights": "weights"}
            record = {k: ops.convert_to_numpy(layer_maps[name]).astype("float32") for k, name in names.items()}
            if record["weights"].shape[:-2] != record["after"].shape[:-2]:
                raise RuntimeError(
                    f"The probe's layer {index} ({self.blocks[index].name}) does not match attention map "
                    f"{index}: shapes {record['after'].shape} and {record['weights'].shape}."
                )
            arrays.append(record)
        layouts = _layouts(self.backbone, [a["weights"].shape for a in arrays])
        layers = []
        for index, (block, layer, record, layout) in enumerate(zip(self.blocks, self.attention_layers, arrays, layouts)):
            kind, stage, prefix, grid = layout
            sata = layer.suppression is not None
            layers.append(LayerAttention(
                index=index, name=block.name, kind=kind, stage=stage, num_prefix_tokens=prefix, grid=grid,
                before=record["before"], after=record["after"], weights=record["weights"],
                has_suppression=sata, threshold=float(layer.suppression_layer.threshold) if sata else None,
            ))
        logits = None
        if isinstance(outputs, dict) and "logits" in outputs:
            logits = ops.convert_to_numpy(outputs["logits"]).astype("float32")
        grid_size = getattr(self.backbone, "grid_size", None)
        return AttentionProbe(
            backbone=type(self.backbone).__name__,
            images=images,
            logits=logits,
            layers=layers,
            grid_size=tuple(grid_size) if grid_size is not None else None,
        )


def probe_attention(model, images):
    """Every attention layer's maps before and after SATA on `images`, from
    one forward pass (inference mode).

    Args:
        model: an `ImageClassifier` of this package, its backbone, or an
            `aal.AttentionLinkDistiller` (its student).
        images: `(B, H, W, C)` float images in the model's input range.

    Returns:
        An `AttentionProbe` (NumPy arrays; see `LayerAttention` for the
        shapes and what each array is).
    """
    return AttentionProber(model)(images)
