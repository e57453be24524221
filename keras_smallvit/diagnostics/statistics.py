"""Attention statistics as NumPy functions of fetched attention arrays.

Every function here takes NumPy arrays (attention probabilities whose last
axis runs over the keys) and returns NumPy arrays or floats; each definition
is written out in its docstring so it can be checked by hand.

Conventions shared by all functions:
- logarithms are natural (entropies in nats);
- `0 * log 0 = 0`: an entry that is exactly 0 (LSA's masked diagonal, a
  Swin shift mask) adds nothing to an entropy;
- the uniform reference of a row spreads over *all* its `N_k` keys, masked
  ones included, so a row that is uniform over the `N_k - 1` unmasked keys
  has `KL = log(N_k / (N_k - 1)) > 0`;
- rows are normalised to sum 1 before an entropy or a divergence
  (`normalize=True`): SATA does not renormalise its rows (their sum is below
  1 after suppression), so the statistics describe the distribution a row
  defines, whatever its total.
"""

import numpy as np

# Histogram edges of attention weights: a bin [0, 1e-6) for (near-)zeros, then
# 24 log-spaced bins up to 1 (attention weights span many decades).
HISTOGRAM_EDGES = np.concatenate([[0.0], np.logspace(-6, 0, 25)])


def _as_rows(attention, name="attention"):
    attention = np.asarray(attention, dtype=np.float64)
    if attention.ndim < 1 or attention.shape[-1] < 1:
        raise ValueError(f"Invalid `{name}` of shape {attention.shape}: expected (..., num_keys) with num_keys >= 1.")
    if not np.isfinite(attention).all():
        raise ValueError(f"Invalid `{name}`: it holds NaN or inf values.")
    if (attention < 0).any():
        raise ValueError(
            f"Invalid `{name}`: it has negative entries (min {attention.min():.3g}); these statistics "
            "need probabilities (e.g. CaiT's post-softmax talking-heads weights are not: use the "
            "per-head softmax probabilities, as `probe_attention` returns them)."
        )
    return attention


def normalize_rows(attention):
    """Rows divided by their sum (rows summing to 0 are left at 0).

    Args:
        attention: `(..., N_k)` non-negative array.

    Returns:
        float64 array of the same shape whose rows sum to 1.
    """
    attention = _as_rows(attention)
    total = attention.sum(axis=-1, keepdims=True)
    return np.divide(attention, total, out=np.zeros_like(attention), where=total > 0)


def entropy(attention, normalize=True):
    """Entropy of each row: `H(p) = -sum_j p_j log p_j`, with `0 log 0 = 0`.

    Args:
        attention: `(..., N_k)` attention probabilities (rows over the keys).
        normalize: divide each row by its sum first (see the module notes).

    Returns:
        `(...)` float64 entropies in nats, in `[0, log N_k]`.
    """
    p = normalize_rows(attention) if normalize else _as_rows(attention)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=-1)


def kl_from_uniform(attention, normalize=True):
    """KL divergence of each row from the uniform distribution over all keys.

    `KL(p || u) = sum_j p_j log(p_j / (1 / N_k)) = log N_k - H(p)`, with
    `0 log 0 = 0` and `N_k` counting every key (masked ones included).
    0 for a uniform row, `log N_k` for a one-hot row: larger is sharper
    (SPT/LSA paper, Figure 4).

    Args:
        attention: `(..., N_k)` attention probabilities.
        normalize: divide each row by its sum first.

    Returns:
        `(...)` float64 divergences in nats.
    """
    attention = _as_rows(attention)
    return np.log(attention.shape[-1]) - entropy(attention, normalize)


def normalized_entropy(attention, normalize=True):
    """Attention density of each row: `H(p) / log N_k`, in `[0, 1]`.

    1 for a uniform row (dense attention, what CB adds explicitly), 0 for a
    one-hot row. Defined as 1 when `N_k = 1` (a single key is the uniform
    distribution).

    Args:
        attention: `(..., N_k)` attention probabilities.
        normalize: divide each row by its sum first.

    Returns:
        `(...)` float64 values in `[0, 1]`.
    """
    attention = _as_rows(attention)
    num_keys = attention.shape[-1]
    if num_keys == 1:
        return np.ones(attention.shape[:-1])
    return entropy(attention, normalize) / np.log(num_keys)


def rows_by_head(attention, head_axis=1):
    """Rearranges attention maps to `(heads, rows, N_k)`: every query row of
    every image (and window) of each head.

    Args:
        attention: `(B, heads, N_q, N_k)` maps (self or class attention), or
            `(B, windows, heads, N, N)` window maps with `head_axis=2`.
        head_axis: the axis of the heads.

    Returns:
        `(heads, B * [windows *] N_q, N_k)` array.
    """
    attention = np.asarray(attention)
    moved = np.moveaxis(attention, head_axis, 0)
    return moved.reshape(moved.shape[0], -1, moved.shape[-1])


def head_means(row_values):
    """`(heads, rows)` per-row values -> `(heads,)` means over rows."""
    return np.asarray(row_values, dtype=np.float64).mean(axis=-1)


def trivial_attention(before, after=None, threshold=0.1):
    """Accumulated trivial attention of each row (SATA paper, Figure 1).

    With `m = max_j a_j` the row maximum of the softmax output `a` *before*
    suppression, key `j` is trivial when `a_j <= threshold * m` (SATA's mask;
    masked zeros count as trivial and add 0). Per row:
    - `row_max = m`;
    - `mass_before = sum_j [a_j <= t m] a_j`, the accumulated trivial
      attention (the paper's point: it often exceeds `m`);
    - `mass_after = sum_j [a_j <= t m] a'_j` with `a'` the row after SATA
      (the same keys; Lemma 1: `mass_after <= s * m`);
    - `fraction_trivial`: the fraction of keys that are trivial.

    Args:
        before: `(..., N_k)` probabilities before suppression.
        after: the same rows after suppression, or None.
        threshold: SATA's `t` in `[0, 1]`.

    Returns:
        dict of `(...)` float64 arrays: `row_max`, `mass_before`,
        `fraction_trivial` and, with `after`, `mass_after`.
    """
    before = _as_rows(before, "before")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"Invalid `threshold`: {threshold!r}. Expected a number in [0, 1].")
    row_max = before.max(axis=-1)
    trivial = before <= threshold * row_max[..., None]
    result = {
        "row_max": row_max,
        "mass_before": (before * trivial).sum(axis=-1),
        "fraction_trivial": trivial.mean(axis=-1),
    }
    if after is not None:
        after = _as_rows(after, "after")
        if after.shape != before.shape:
            raise ValueError(f"Invalid `after` of shape {after.shape}: expected the shape of `before`, {before.shape}.")
        result["mass_after"] = (after * trivial).sum(axis=-1)
    return result


def attention_histogram(attention, edges=HISTOGRAM_EDGES):
    """Fraction of attention weights in each bin of `edges`.

    Bins are `[edges[i], edges[i + 1])`, the last one closed; weights above
    the last edge (possible after SATA with `s > 1`) count in the last bin.

    Args:
        attention: array of attention weights (any shape).
        edges: increasing bin edges (default: `[0, 1e-6]`, then 24
            log-spaced bins up to 1).

    Returns:
        `(len(edges) - 1,)` float64 fractions summing to 1.
    """
    values = _as_rows(np.ravel(attention))
    edges = np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(np.minimum(values, edges[-1]), bins=edges)
    return counts / max(values.size, 1)


def attention_rollout(attention_maps, add_identity=True):
    """Attention rollout (Abnar & Zuidema 2020) through a stack of layers.

    For each layer, in order: average the heads, `Abar = mean_h A_h`; add the
    identity for the residual connection and renormalise the rows,
    `Ahat = rownorm(Abar + I)`; then accumulate `R <- Ahat @ R` from
    `R = I`. Row `i` of the result is how much token `i` at the top draws,
    through all layers, on each input token.

    Args:
        attention_maps: a list of `(B, heads, T, T)` (or `(B, T, T)`, already
            head-averaged) maps over the same `T` tokens, first layer first.
        add_identity: add `I` before renormalising (the paper's residual
            term); False multiplies the renormalised head averages only.

    Returns:
        `(B, T, T)` float64 rollout.
    """
    if not attention_maps:
        raise ValueError("Invalid `attention_maps`: empty. Expected at least one (B, heads, T, T) map.")
    rollout = None
    for index, layer in enumerate(attention_maps):
        layer = _as_rows(layer, f"attention_maps[{index}]")
        averaged = layer.mean(axis=1) if layer.ndim == 4 else layer
        if averaged.ndim != 3 or averaged.shape[-1] != averaged.shape[-2]:
            raise ValueError(
                f"Invalid `attention_maps[{index}]` of shape {layer.shape}: expected square "
                "(B, heads, T, T) or (B, T, T) maps."
            )
        if rollout is not None and averaged.shape != rollout.shape:
            raise ValueError(
                f"Invalid `attention_maps[{index}]` of shape {layer.shape}: every map must cover "
                f"the same {rollout.shape[-1]} tokens."
            )
        if add_identity:
            averaged = averaged + np.eye(averaged.shape[-1])
        averaged = normalize_rows(averaged)
        rollout = averaged if rollout is None else averaged @ rollout
    return rollout
