"""The papers' attention analyses as numbers (JSON-ready) and maps.

`attention_report` summarises a probe per layer and head; `class_token_maps`
gives the class-token attention of the last layer and the attention rollout
on the patch grid. How each kind of attention is summarised:

- self-attention (ViT, PiT, T2T, CaiT patch layers) `(B, h, T, T)`: every
  query row (class token included) of every image counts once;
- window attention (Swin) `(B, windows, h, n, n)`: every query row of every
  window of every image counts once; keys (and the uniform reference) are
  the `n` tokens of the window, shift-masked ones included;
- class attention (CaiT) `(B, h, 1, N)`: the class token's row over the
  patches;
- CaiT's talking heads mix the heads after the softmax, giving weights that
  may be negative: all statistics use the per-head softmax probabilities
  (after the mask and SATA, before that mixing).

Distribution statistics (entropy, KL from uniform, density) use the
probabilities after SATA with rows renormalised (see `statistics`); SATA's
own statistics compare the rows before and after suppression.
"""

import numpy as np

from keras_smallvit.diagnostics import statistics as st
from keras_smallvit.diagnostics.probe import attention_temperatures
from keras_smallvit.diagnostics.probe import probe_attention
from keras_smallvit.diagnostics.probe import suppression_scales

DEFAULT_TRIVIAL_THRESHOLD = 0.1  # SATA's default t, used for layers without SATA

SWIN_ROLLOUT_REASON = (
    "window attention (Swin) has no class token, and each map covers one window, never the whole "
    "image: class-token maps and attention rollout are not defined"
)


def _per_head(values):
    values = np.asarray(values, dtype=np.float64)
    return {"per_head": values.tolist(), "mean": float(values.mean())}


def _layer_report(layer, threshold):
    after = st.rows_by_head(layer.after, layer.head_axis)
    before = st.rows_by_head(layer.before, layer.head_axis)
    t = threshold if threshold is not None else (layer.threshold or DEFAULT_TRIVIAL_THRESHOLD)
    trivial = st.trivial_attention(before, after if layer.has_suppression else None, t)
    # One entropy pass; KL and density follow from it (statistics.kl_from_uniform and
    # normalized_entropy give the same, tested).
    entropy = st.entropy(after)
    num_keys = after.shape[-1]
    report = {
        "index": layer.index,
        "name": layer.name,
        "kind": layer.kind,
        "stage": layer.stage,
        "num_heads": int(layer.num_heads),
        "num_keys": int(num_keys),
        "num_rows": int(after.shape[1]),
        "num_prefix_tokens": layer.num_prefix_tokens,
        "entropy": _per_head(st.head_means(entropy)),
        "kl_from_uniform": _per_head(st.head_means(np.log(num_keys) - entropy)),
        "normalized_entropy": _per_head(
            st.head_means(entropy / np.log(num_keys) if num_keys > 1 else np.ones_like(entropy))
        ),
        "trivial": {
            "threshold": float(t),
            "row_max": _per_head(st.head_means(trivial["row_max"])),
            "mass_before": _per_head(st.head_means(trivial["mass_before"])),
            "mass_after": _per_head(st.head_means(trivial["mass_after"])) if layer.has_suppression else None,
            "fraction_trivial": _per_head(st.head_means(trivial["fraction_trivial"])),
            # SATA Figure 1's point: rows whose trivial mass outweighs their maximum.
            "rows_mass_above_max_before": float((trivial["mass_before"] > trivial["row_max"]).mean()),
            "rows_mass_above_max_after": (
                float((trivial["mass_after"] > trivial["row_max"]).mean()) if layer.has_suppression else None
            ),
        },
        "histogram_before": st.attention_histogram(layer.before).tolist(),
        "histogram_after": st.attention_histogram(layer.after).tolist() if layer.has_suppression else None,
    }
    return report


def attention_report(model, images=None, threshold=None, probe=None):
    """All per-layer attention statistics of `model` as a JSON-ready dict.

    Args:
        model: an `ImageClassifier` of this package, its backbone, or an
            `aal.AttentionLinkDistiller` (its student).
        images: `(B, H, W, C)` images to probe (unless `probe` is given).
        threshold: SATA's `t` for the trivial-attention statistics; None =
            each layer's own threshold (0.1 for layers without SATA).
        probe: an `AttentionProbe` already taken on `model` (then no forward
            pass runs and `images` must be None).

    Returns:
        dict with `backbone`, `num_images`, `histogram_edges`, `class_token`
        (`last_layer`, `rollout_layers`, `reason`: see `class_token_maps`)
        and `layers`, one dict per attention layer in map order: `name`,
        `kind`, `stage`, `num_heads`, `num_keys`, `num_rows` (query rows per
        head: images x [windows x] queries); `entropy`, `kl_from_uniform`,
        `normalized_entropy` (each `{"per_head", "mean"}`, the mean over
        rows per head, then over heads); `trivial` (per-head means of
        `row_max`, `mass_before`, `mass_after` (None without SATA) and
        `fraction_trivial`, see `statistics.trivial_attention`, plus
        `rows_mass_above_max_before`/`_after`, the fraction of rows whose
        trivial mass exceeds their maximum); `histogram_before` /
        `histogram_after` (fractions per bin of `histogram_edges`; after:
        None without SATA); `temperature` (see `attention_temperatures`);
        `sata` (`{"scale", "threshold"}`, or None without SATA).
    """
    if probe is None:
        if images is None:
            raise ValueError("Invalid `images`: None. Pass the (B, H, W, C) images to probe, or `probe=`.")
        probe = probe_attention(model, images)
    elif images is not None:
        raise ValueError("Invalid `images`: with `probe=`, the probe's own images are used; pass None.")
    temperatures = attention_temperatures(model)
    scales = suppression_scales(model)
    layers = []
    for layer, temperature, sata in zip(probe.layers, temperatures, scales):
        entry = _layer_report(layer, threshold)
        entry["temperature"] = {k: v for k, v in temperature.items() if k != "name"}
        entry["sata"] = None if sata["scale"] is None else {"scale": sata["scale"], "threshold": sata["threshold"]}
        layers.append(entry)
    maps = class_token_maps(probe)
    return {
        "backbone": probe.backbone,
        "num_images": int(probe.images.shape[0]),
        "histogram_edges": st.HISTOGRAM_EDGES.tolist(),
        "layers": layers,
        "class_token": {
            "last_layer": maps["last_layer_name"],
            "rollout_layers": maps["rollout_layers"],
            "reason": maps["reason"],
        },
    }


def _class_row(layer):
    """Head-averaged class-token row over the visual keys, `(B, h, w)`."""
    averaged = layer.after.mean(axis=1)  # (B, Nq, Nk)
    row = averaged[:, 0, layer.num_prefix_tokens :]
    return row.reshape(row.shape[0], *layer.grid)


def _has_class_row(layer):
    if layer.grid is None:
        return False
    return layer.kind == "class" or (layer.kind == "self" and layer.num_prefix_tokens >= 1)


def _cait_joint_maps(patch_layers, class_layers):
    """Patch and class layers as head-averaged `(B, 1 + N, 1 + N)` maps over
    [class token, patches]: a patch layer leaves the class token alone (a
    zero row: the identity after `+ I`), a class layer updates only the
    class token's row (the patches stay fixed)."""
    maps = []
    for layer in patch_layers:
        averaged = layer.after.mean(axis=1)
        joint = np.zeros((averaged.shape[0], averaged.shape[1] + 1, averaged.shape[2] + 1))
        joint[:, 1:, 1:] = averaged
        maps.append(joint)
    for layer in class_layers:
        row = layer.after.mean(axis=1)[:, 0]
        joint = np.zeros((row.shape[0], row.shape[1] + 1, row.shape[1] + 1))
        joint[:, 0, 1:] = row
        maps.append(joint)
    return maps


def class_token_maps(probe):
    """Class-token attention on the patch grid (SPT/LSA paper, Figure 5).

    - `last_layer`: the last layer with a class token, heads averaged: the
      class token's row over the visual tokens.
    - `rollout`: attention rollout (`statistics.attention_rollout`) through
      the layers that share the last layer's tokens, then the class token's
      row over the visual tokens:
      ViT: all blocks; T2T: its blocks (the token transformers have no class
      token and other token counts); PiT: the blocks of the last stage (the
      pooling between stages changes the tokens; rollout does not cross it);
      CaiT: the patch-attention layers, then the class-attention layers, as
      maps over [class token, patches] (see `_cait_joint_maps`); Swin: not
      defined (`reason`).

    Args:
        probe: an `AttentionProbe`.

    Returns:
        dict: `last_layer` `(B, h, w)` and `rollout` `(B, h, w)` float64
        arrays (or None), `last_layer_name`, `rollout_layers` (names) and
        `reason` (why they are None, else None).
    """
    empty = {"last_layer": None, "rollout": None, "last_layer_name": None, "rollout_layers": [], "reason": None}
    eligible = [layer for layer in probe.layers if _has_class_row(layer)]
    if not eligible:
        kinds = {layer.kind for layer in probe.layers}
        empty["reason"] = SWIN_ROLLOUT_REASON if kinds == {"window"} else (
            "no attention layer has a class-token row on a patch grid"
        )
        return empty
    last = eligible[-1]
    result = dict(empty, last_layer=_class_row(last), last_layer_name=last.name)
    position = probe.layers.index(last)
    if last.kind == "class":
        class_layers = [l for l in probe.layers if l.kind == "class" and l.stage == last.stage]
        first = probe.layers.index(class_layers[0])
        patch_layers = []
        for layer in reversed(probe.layers[:first]):
            if layer.kind != "self" or layer.num_prefix_tokens or layer.after.shape[-1] != last.after.shape[-1]:
                break
            patch_layers.insert(0, layer)
        chain = patch_layers + class_layers
        rollout = st.attention_rollout(_cait_joint_maps(patch_layers, class_layers))
        row = rollout[:, 0, 1:]
    else:
        chain = [l for l in probe.layers[: position + 1] if l.stage == last.stage]
        rollout = st.attention_rollout([l.after for l in chain])
        row = rollout[:, 0, last.num_prefix_tokens :]
    result["rollout"] = row.reshape(row.shape[0], *last.grid)
    result["rollout_layers"] = [l.name for l in chain]
    return result
