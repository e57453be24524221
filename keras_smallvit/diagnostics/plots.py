"""The papers' figures from attention reports, as matplotlib figures.

Every function returns a `matplotlib.figure.Figure` built without pyplot
(no global backend, no GUI: headless and notebook-friendly; Jupyter shows
a returned figure inline) and can save it as PNG with `path=`. Figures have
fixed sizes (`figure_size_pixels`) at `DPI` dots per inch.

Inputs are the dicts of `attention_report` (or their JSON), so a figure can
be remade from the numbers a run saved.
"""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")

# Width and height in inches of each figure (class-token maps: per image and per row).
FIGURE_INCHES = {
    "temperature": (6.4, 4.0),
    "sharpness": (11.0, 4.0),
    "density": (6.4, 4.0),
    "sata": (16.0, 4.2),
    "links": (7.0, 5.0),
    "learning_curves": (11.0, 4.0),
    "epochs": (16.0, 4.2),
}
CLASS_MAP_INCHES = (1.8, 1.9)  # per image column, per row
CLASS_MAP_HEADER = 0.5


def figure_size_pixels(name, num_images=None, num_rows=None):
    """`(width, height)` in pixels of the PNG that `name`'s plot writes.

    Args:
        name: a key of `FIGURE_INCHES`, or `"class_token_maps"` (then give
            `num_images` columns and `num_rows` map rows, the image row not
            counted).
    """
    if name == "class_token_maps":
        width, height = CLASS_MAP_INCHES
        inches = (width * num_images, height * (num_rows + 1) + CLASS_MAP_HEADER)
    else:
        inches = FIGURE_INCHES[name]
    return int(round(inches[0] * DPI)), int(round(inches[1] * DPI))


def _figure(name, num_images=None, num_rows=None):
    width, height = figure_size_pixels(name, num_images, num_rows)
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def save_figure(figure, path):
    """Writes `figure` as a PNG of its exact size (no tight bounding box)."""
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _finish(figure, path):
    if path is not None:
        save_figure(figure, path)
    return figure


def _as_list(reports, labels):
    if isinstance(reports, dict):
        reports = [reports]
    labels = list(labels) if labels is not None else [f"model {i + 1}" for i in range(len(reports))]
    if len(labels) != len(reports):
        raise ValueError(f"Invalid `labels`: {len(labels)} labels for {len(reports)} reports.")
    return list(reports), labels


def _stage_lines(ax, report):
    stages = [layer["stage"] for layer in report["layers"]]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i - 0.5, color="0.8", linewidth=0.8, zorder=0)


def _per_layer(ax, report, key, color, label):
    """Layer means of `report["layers"][i][key]` as a line, heads as dots."""
    values = [layer[key] for layer in report["layers"]]
    x = np.arange(len(values))
    ax.plot(x, [v["mean"] for v in values], marker="o", color=color, label=label)
    for i, v in enumerate(values):
        ax.scatter(np.full(len(v["per_head"]), i), v["per_head"], s=8, color=color, alpha=0.35)
    ax.set_xlabel("layer")
    ax.set_xticks(x)


def plot_temperatures(reports, labels=None, path=None):
    """Learned softmax temperature per depth (SPT/LSA paper, Figure 3).

    The paper's temperature `tau = 1 / scale` per layer (mean line, heads as
    dots), with each model's initial `sqrt(head_dim)` dashed; a layer
    without LSA keeps its fixed value.

    Args:
        reports: one `attention_report` dict or a list of them.
        labels: one legend label per report.
        path: where to save the PNG, or None.
    """
    reports, labels = _as_list(reports, labels)
    figure = _figure("temperature")
    ax = figure.add_subplot(1, 1, 1)
    for i, (report, label) in enumerate(zip(reports, labels)):
        color = COLORS[i % len(COLORS)]
        layers = report["layers"]
        taus = [layer["temperature"]["tau"] for layer in layers]
        learnable = any(layer["temperature"]["learnable"] for layer in layers)
        x = np.arange(len(layers))
        ax.plot(x, [np.mean(t) for t in taus], marker="o", color=color,
                label=f"{label} ({'learned' if learnable else 'fixed'})")
        for j, t in enumerate(taus):
            ax.scatter(np.full(len(t), j), t, s=8, color=color, alpha=0.35)
        ax.plot(x, [layer["temperature"]["initial_tau"] for layer in layers], linestyle="--", color=color,
                alpha=0.6, linewidth=1)
        _stage_lines(ax, report)
    ax.set_xlabel("layer")
    ax.set_ylabel("temperature tau = 1 / scale")
    ax.set_title("Softmax temperature per layer (dashed: initial sqrt(head_dim))")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return _finish(figure, path)


def plot_sharpness(reports, labels=None, path=None):
    """Attention sharpness per layer (SPT/LSA paper, Figure 4): KL divergence
    from the uniform distribution (higher = sharper) and entropy, averaged
    over query rows and images; heads as dots.

    Args:
        reports: one `attention_report` dict or a list of them.
        labels: one legend label per report.
        path: where to save the PNG, or None.
    """
    reports, labels = _as_list(reports, labels)
    figure = _figure("sharpness")
    axes = figure.subplots(1, 2)
    for i, (report, label) in enumerate(zip(reports, labels)):
        color = COLORS[i % len(COLORS)]
        _per_layer(axes[0], report, "kl_from_uniform", color, label)
        _per_layer(axes[1], report, "entropy", color, label)
        _stage_lines(axes[0], report)
        _stage_lines(axes[1], report)
    axes[0].set_ylabel("KL(attention || uniform) [nats]")
    axes[0].set_title("Sharpness: KL divergence from uniform")
    axes[1].set_ylabel("entropy [nats]")
    axes[1].set_title("Entropy of the attention rows")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return _finish(figure, path)


def plot_attention_density(reports, labels=None, path=None):
    """Attention density per layer (CB paper): the mean normalised entropy
    `H / log N_k` of the attention rows, 1 = uniform (dense) attention.
    Give two reports (e.g. ViT and CB-ViT) to compare.

    Args:
        reports: one `attention_report` dict or a list of them.
        labels: one legend label per report.
        path: where to save the PNG, or None.
    """
    reports, labels = _as_list(reports, labels)
    figure = _figure("density")
    ax = figure.add_subplot(1, 1, 1)
    for i, (report, label) in enumerate(zip(reports, labels)):
        _per_layer(ax, report, "normalized_entropy", COLORS[i % len(COLORS)], label)
        _stage_lines(ax, report)
    ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("normalised entropy (1 = uniform)")
    ax.set_title("Attention density per layer")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return _finish(figure, path)


def plot_trivial_attention(reports, labels=None, path=None):
    """SATA's analyses (SATA paper, Figures 1 and 3), three panels:

    1. per layer, the mean row maximum against the mean accumulated trivial
       attention (weights `<= t * row max`) before and, with SATA, after
       suppression;
    2. the histogram of all attention weights (every layer) before and after
       suppression, log-spaced bins;
    3. the learned `s` per layer (layers without SATA are left out).

    Args:
        reports: one `attention_report` dict or a list of them.
        labels: one legend label per report.
        path: where to save the PNG, or None.
    """
    reports, labels = _as_list(reports, labels)
    figure = _figure("sata")
    axes = figure.subplots(1, 3)
    width = 0.8 / (3 * len(reports))  # 3 bars per model and layer
    for i, (report, label) in enumerate(zip(reports, labels)):
        color = COLORS[i % len(COLORS)]
        layers = report["layers"]
        x = np.arange(len(layers))
        offset = -0.4 + (3 * i + 0.5) * width
        row_max = [layer["trivial"]["row_max"]["mean"] for layer in layers]
        before = [layer["trivial"]["mass_before"]["mean"] for layer in layers]
        axes[0].bar(x + offset, row_max, width, color=color, alpha=1.0, label=f"{label}: row max")
        axes[0].bar(x + offset + width, before, width, color=color, alpha=0.55,
                    label=f"{label}: trivial mass, before")
        if any(layer["trivial"]["mass_after"] is not None for layer in layers):
            after = [np.nan if layer["trivial"]["mass_after"] is None else layer["trivial"]["mass_after"]["mean"]
                     for layer in layers]
            axes[0].bar(x + offset + 2 * width, after, width, color=color, alpha=0.3,
                        label=f"{label}: trivial mass, after SATA")

        edges = np.asarray(report["histogram_edges"])
        centers = np.sqrt(np.maximum(edges[:-1], edges[1] / 10) * edges[1:])
        # Log y: empty bins (NaN) are not drawn.
        hist_before = np.mean([layer["histogram_before"] for layer in layers], axis=0)
        axes[1].plot(centers, np.where(hist_before > 0, hist_before, np.nan), color=color, marker=".",
                     label=f"{label}: before")
        with_after = [layer["histogram_after"] for layer in layers if layer["histogram_after"] is not None]
        if with_after:
            hist_after = np.mean(with_after, axis=0)
            axes[1].plot(centers, np.where(hist_after > 0, hist_after, np.nan), color=color, linestyle="--",
                         marker="x", label=f"{label}: after SATA")

        scales = [(j, layer["sata"]["scale"]) for j, layer in enumerate(layers) if layer["sata"] is not None]
        if scales:
            axes[2].plot([j for j, _ in scales], [s for _, s in scales], marker="o", color=color, label=label)
    for ax in (axes[0], axes[2]):
        ax.set_xlabel("layer")
        ax.set_xticks(np.arange(max(len(r["layers"]) for r in reports)))
    axes[0].set_ylabel("mean weight per query row")
    axes[0].set_title("Row maximum vs accumulated trivial attention")
    axes[0].set_ylim(0, axes[0].get_ylim()[1] * (1.2 + 0.12 * len(reports)))  # room for the legend
    axes[0].legend(fontsize=7, ncol=len(reports), loc="upper center")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("attention weight (first bin: < 1e-6)")
    axes[1].set_ylabel("fraction of weights")
    axes[1].set_title("Attention weights, all layers")
    axes[1].legend(fontsize=7)
    axes[2].set_ylabel("s")
    axes[2].set_title("SATA's learned s per layer")
    if axes[2].lines:
        axes[2].legend(fontsize=7)
    else:
        axes[2].text(0.5, 0.5, "no SATA layers", ha="center", va="center", transform=axes[2].transAxes)
    figure.tight_layout()
    return _finish(figure, path)


def _display_image(image):
    image = np.asarray(image, dtype=np.float64)
    low, high = image.min(), image.max()
    if low < 0.0 or high > 1.0:
        image = (image - low) / max(high - low, 1e-12)
    return image[..., 0] if image.shape[-1] == 1 else image


def plot_class_token_maps(images, rows, row_labels, column_titles=None, path=None):
    """Class-token attention overlaid on the images (SPT/LSA paper, Figure 5).

    First row: the images; each further row: one set of maps (e.g. a model's
    last layer and its rollout), each map min-max scaled per image and drawn
    bilinearly over the image.

    Args:
        images: `(B, H, W, C)` images (shown as is when in [0, 1], else
            min-max scaled).
        rows: list of `(B, h, w)` maps (`class_token_maps` outputs).
        row_labels: one label per map row.
        column_titles: optional title per image (e.g. predictions).
        path: where to save the PNG, or None.
    """
    images = np.asarray(images)
    if len(rows) != len(row_labels):
        raise ValueError(f"Invalid `row_labels`: {len(row_labels)} labels for {len(rows)} rows.")
    num_images = images.shape[0]
    figure = _figure("class_token_maps", num_images=num_images, num_rows=len(rows))
    axes = figure.subplots(len(rows) + 1, num_images, squeeze=False)
    height, width = images.shape[1:3]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    for column in range(num_images):
        image = _display_image(images[column])
        cmap = "gray" if image.ndim == 2 else None
        axes[0, column].imshow(image, cmap=cmap)
        if column_titles is not None:
            axes[0, column].set_title(column_titles[column], fontsize=8)
        for r, maps in enumerate(rows):
            m = np.asarray(maps[column], dtype=np.float64)
            m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
            ax = axes[r + 1, column]
            ax.imshow(image, cmap=cmap)
            ax.imshow(m, cmap="jet", alpha=0.5, extent=extent, interpolation="bilinear")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=8)
    for r, label in enumerate(row_labels):
        axes[r + 1, 0].set_ylabel(label, fontsize=8)
    figure.suptitle("Class-token attention (min-max scaled per image)", fontsize=10)
    figure.tight_layout()
    return _finish(figure, path)


def plot_link_magnitudes(magnitudes, teacher_block_names=None, layer_names=None, path=None):
    """AAL's link magnitudes (AAL paper, Figure 2): mean |link weight|
    between each teacher block (rows, shallow to deep) and ViT layer
    (columns), as a heatmap.

    Args:
        magnitudes: `(teacher blocks, ViT layers)` array
            (`AttentionLinkDistiller.link_magnitudes()`).
        teacher_block_names: row labels (`teacher_block_names`).
        layer_names: column labels (default: layer indices).
        path: where to save the PNG, or None.
    """
    magnitudes = np.asarray(magnitudes, dtype=np.float64)
    if magnitudes.ndim != 2:
        raise ValueError(f"Invalid `magnitudes` of shape {magnitudes.shape}: expected (teacher blocks, layers).")
    figure = _figure("links")
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(magnitudes, cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=ax, label="mean |link weight|")
    ax.set_xticks(np.arange(magnitudes.shape[1]))
    ax.set_xticklabels(layer_names if layer_names is not None else np.arange(magnitudes.shape[1]),
                       rotation=90 if layer_names is not None else 0, fontsize=7)
    ax.set_yticks(np.arange(magnitudes.shape[0]))
    ax.set_yticklabels(teacher_block_names if teacher_block_names is not None else np.arange(magnitudes.shape[0]),
                       fontsize=7)
    ax.set_xlabel("ViT layer")
    ax.set_ylabel("teacher block")
    ax.set_title("AAL link magnitudes")
    figure.tight_layout()
    return _finish(figure, path)


def plot_learning_curves(histories, labels=None, path=None):
    """Loss and top-1 per epoch, train and validation.

    Args:
        histories: a list of rows (dicts with `epoch` and Keras log keys:
            `loss`, `val_loss`, `top1`, `val_top1`, ...), e.g. a run's
            `log.csv`, or a list of such lists.
        labels: one legend label per history.
        path: where to save the PNG, or None.
    """
    if histories and isinstance(histories[0], dict):
        histories = [histories]
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in range(len(histories))]
    figure = _figure("learning_curves")
    axes = figure.subplots(1, 2)
    for i, (rows, label) in enumerate(zip(histories, labels)):
        color = COLORS[i % len(COLORS)]
        epochs = [float(row["epoch"]) for row in rows]
        for ax, key in zip(axes, ("loss", "top1")):
            for prefix, style in (("", "-"), ("val_", "--")):
                values = [row.get(prefix + key) for row in rows]
                if all(v not in (None, "") for v in values) and values:
                    ax.plot(epochs, [float(v) for v in values], linestyle=style, marker="o", markersize=3,
                            color=color, label=f"{label} {'test' if prefix else 'train'}")
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel("top-1")
    for ax, title in zip(axes, ("Loss", "Top-1 accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        if ax.lines:
            ax.legend(fontsize=7)
    figure.tight_layout()
    return _finish(figure, path)


def plot_epochs(epoch_reports, path=None):
    """How the diagnostics moved during training (the callback's per-epoch
    JSON): per layer, the mean temperature, the attention density and SATA's
    `s`, one line per layer against the epoch.

    Args:
        epoch_reports: list of the callback's per-epoch dicts (each with
            `epoch` and `layers`), in epoch order.
        path: where to save the PNG, or None.
    """
    figure = _figure("epochs")
    axes = figure.subplots(1, 3)
    epochs = [report["epoch"] for report in epoch_reports]
    num_layers = len(epoch_reports[0]["layers"]) if epoch_reports else 0
    colors = [figure_color(i, num_layers) for i in range(num_layers)]
    for j in range(num_layers):
        name = epoch_reports[0]["layers"][j]["name"]
        taus = [r["layers"][j]["temperature"]["tau_mean"] for r in epoch_reports]
        density = [r["layers"][j]["normalized_entropy"]["mean"] for r in epoch_reports]
        axes[0].plot(epochs, taus, marker="o", markersize=3, color=colors[j], label=name)
        axes[1].plot(epochs, density, marker="o", markersize=3, color=colors[j], label=name)
        scales = [r["layers"][j]["sata"] for r in epoch_reports]
        if all(s is not None for s in scales):
            axes[2].plot(epochs, [s["scale"] for s in scales], marker="o", markersize=3, color=colors[j], label=name)
    for ax, title, ylabel in zip(
        axes,
        ("Temperature per layer", "Attention density per layer", "SATA's s per layer"),
        ("tau (mean over heads)", "normalised entropy", "s"),
    ):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if ax.lines:
            ax.legend(fontsize=6, ncol=2)
    if not axes[2].lines:
        axes[2].text(0.5, 0.5, "no SATA layers", ha="center", va="center", transform=axes[2].transAxes)
    figure.tight_layout()
    return _finish(figure, path)


def figure_color(index, count):
    """A colour of the `viridis` map for item `index` of `count` (layers by depth)."""
    from matplotlib import colormaps

    return colormaps["viridis"](index / max(count - 1, 1))
