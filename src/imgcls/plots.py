"""Plots: training curves from runs' history.csv, and the figures of `imgcls evaluate`.

    plot_history          accuracy, loss and learning rate per epoch; best epoch marked; runs overlaid
                          (history_figure builds that figure without saving it)
    plot_confusion_matrix counts or row-normalized, labelled with class names, readable from 2 to 50 classes
    plot_misclassified    a grid of images captioned with true and predicted class and confidence

Every function takes plain data (run folders, arrays, captions) and writes a
PNG; none computes a metric. Matplotlib is imported inside them with the Agg
backend, so this works without a display and without TensorFlow.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from imgcls.run import layout
from imgcls.run.status import best_epoch
from imgcls.files import atomic_file


def _pyplot():
    import matplotlib

    if "ipykernel" not in sys.modules:  # in Jupyter, keep its inline backend: figures show in the notebook
        matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


FIGURE_FORMATS = ("png", "svg", "pdf")


def _save(fig, out: Path, plt, **kwargs) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = out.suffix.lower().lstrip(".")
    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=100, format=kind if kind in FIGURE_FORMATS else "png", **kwargs)
    plt.close(fig)
    return out


def _short(name: str, limit: int = 24) -> str:
    """Long class names cut to `limit` characters, so labels never swallow the plot."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


# --------------------------------------------------------------------------- training curves


def plot_history(run_dirs: list[Path], out: Path) -> Path:
    """Write `history_figure(run_dirs)` to `out`."""
    return _save(history_figure(run_dirs), out, _pyplot())


def history_figure(run_dirs: list[Path]):
    """Accuracy, loss and learning rate; training solid, validation dashed; one colour per run.

    A dotted vertical line and a star mark each run's best epoch: the one
    best.keras holds (the checkpoint's monitored metric). Several runs share
    one legend under the panels, naming each run by its colour.
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    learning_rates, run_handles = [], []
    for i, run in enumerate(run_dirs):
        colour = colours[i % len(colours)]
        best = best_epoch(run)
        learning_rates += _plot_run(axes, layout.read_history(run), best, colour)
        best_note = f" (best epoch {int(best['epoch'])})" if best else ""
        run_handles.append(Line2D([], [], color=colour, linewidth=3, label=f"{Path(run).name}{best_note}"))
    _finish_panels(axes, learning_rates, legends=len(run_dirs) == 1)
    if len(run_dirs) > 1:
        styles = [Line2D([], [], color="gray", linestyle="-", label="training"),
                  Line2D([], [], color="gray", linestyle="--", label="validation"),
                  Line2D([], [], color="gray", marker="*", linestyle="", markersize=12, markeredgecolor="black",
                         label="best epoch (best.keras)")]
        fig.legend(handles=run_handles + styles, loc="outside lower center", ncol=min(3, len(run_handles) + 3), fontsize="small")
    return fig


def _plot_run(axes, history: list[dict], best: dict | None, colour) -> list[float]:
    """One run's curves on the three panels; returns its learning rates."""
    ax_acc, ax_loss, ax_lr = axes
    epochs = [row["epoch"] for row in history]
    marker = "." if len(epochs) < 30 else None
    for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        for prefix, style, what in (("", "-", "training"), ("val_", "--", "validation")):
            values = [row.get(prefix + key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, color=colour, marker=marker, label=what)
        if best and f"val_{key}" in best:
            ax.plot([best["epoch"]], [best[f"val_{key}"]], "*", color=colour, markersize=14, markeredgecolor="black",
                    label=f"best epoch {int(best['epoch'])}")
    rates = [row.get("lr") for row in history]
    if any(r is not None for r in rates):
        ax_lr.plot(epochs, rates, "-", color=colour, marker=marker, label="learning rate")
    if best:
        for ax in axes:
            ax.axvline(best["epoch"], color=colour, linestyle=":", alpha=0.7)
    return [r for r in rates if r is not None]


def _finish_panels(axes, learning_rates: list[float], legends: bool) -> None:
    ax_lr = axes[2]
    if learning_rates and min(learning_rates) > 0 and max(learning_rates) / min(learning_rates) > 10:
        ax_lr.set_yscale("log")  # schedules span decades: a linear axis flattens the tail
    if not learning_rates:
        ax_lr.text(0.5, 0.5, "no learning rate in history.csv", ha="center", va="center", transform=ax_lr.transAxes)
    for ax, title in zip(axes, ("Accuracy", "Loss", "Learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if legends and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")


# --------------------------------------------------------------------------- evaluation figures


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], out: Path, normalized: bool = False,
                          title: str = "Confusion matrix") -> Path:
    """Rows are true classes, columns predicted ones; every cell annotated (zeros blank past 5 classes).

    The figure grows with the number of classes (about half an inch a class,
    up to 50 classes) so labels and numbers stay readable.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = len(class_names)
    side = min(max(4.0, 0.48 * n), 22.0)
    cell = side / n  # inches
    fig, ax = plt.subplots(figsize=(side + 2.5, side + 1.5))
    top = 1.0 if normalized else max(1, int(matrix.max()))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=top)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class" if normalized else "images")

    labels = [_short(name) for name in class_names]
    font = min(11.0, 22 * cell)  # about four characters fit in a cell
    label_font = max(font, 8.0)
    if max(map(len, labels)) * 0.6 * label_font / 72 > 0.9 * cell:  # names wider than their column: tilt them
        ax.set_xticks(range(n), labels=labels, rotation=45 if n <= 20 else 90, ha="right" if n <= 20 else "center",
                      rotation_mode="anchor" if n <= 20 else "default")
    else:
        ax.set_xticks(range(n), labels=labels)
    ax.set_yticks(range(n), labels=labels)
    ax.tick_params(labelsize=label_font)
    for (i, j), value in np.ndenumerate(matrix):
        if n > 5 and value == 0:
            continue  # blank zeros let the confusions stand out
        text = str(int(value)) if not normalized else f"{value:.2f}".removeprefix("0") if n > 20 else f"{value:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=font, color="white" if value > top / 2 else "black")
    heading = min(16.0, 10 + side / 4)  # big matrices get big titles, or they look like footnotes
    ax.set_xlabel("predicted class", fontsize=heading - 1)
    ax.set_ylabel("true class", fontsize=heading - 1)
    ax.set_title(title, fontsize=heading)
    return _save(fig, out, plt, bbox_inches="tight")


def plot_misclassified(images: list[np.ndarray], mistakes: list[dict], out: Path, title: str = "Most confident mistakes",
                       columns: int = 5) -> Path:
    """A grid of uint8 images, each captioned with its mistake: {"true", "predicted", "confidence"}."""
    plt = _pyplot()
    if not images:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "No misclassified images", ha="center", va="center", fontsize=14)
        ax.set_title(title, fontsize=10)
        return _save(fig, out, plt, bbox_inches="tight")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.8 * columns, 3.3 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, mistake in zip(axes.flat, images, mistakes):
        image = np.asarray(image)
        gray = image.ndim == 3 and image.shape[-1] == 1
        # nearest: small images show their real pixels instead of a blur
        ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(f"true: {_short(mistake['true'])}\npred: {_short(mistake['predicted'])} ({mistake['confidence']:.2f})",
                     fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, out, plt)


def _overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """The heatmap in the jet colours over the image (as the model saw it), `alpha` its weight."""
    from matplotlib import colormaps

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    colours = colormaps["jet"](heatmap)[..., :3] * 255
    return np.clip((1 - alpha) * rgb + alpha * colours, 0, 255).astype(np.uint8)


def plot_explanation(image: np.ndarray, heatmap: np.ndarray, title: str, out: Path, alpha: float = 0.4) -> Path:
    """Original | Grad-CAM heatmap | overlay, side by side, titled with the top labels."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    gray = image.shape[-1] == 1
    axes[0].imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255)
    axes[1].imshow(heatmap, cmap="jet", vmin=0, vmax=1)
    axes[2].imshow(_overlay(image, heatmap, alpha))
    for ax, name in zip(axes, ("image (as the model sees it)", "Grad-CAM", "overlay")):
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, plt)


def plot_mistakes_with_cam(images: list[np.ndarray], heatmaps: list[np.ndarray], mistakes: list[dict], out: Path,
                           about: str = "", alpha: float = 0.4, columns: int = 5) -> Path:
    """misclassified.png's images with the Grad-CAM of the class each was mistaken for, overlaid."""
    overlays = [_overlay(np.asarray(image), heatmap, alpha) for image, heatmap in zip(images, heatmaps)]
    title = "Most confident mistakes, where the model looked (Grad-CAM of the predicted class)"
    return plot_misclassified(overlays, mistakes, out, title=title + (f": {about}" if about else ""), columns=columns)


STAGE_COLOURS = {"input": "#d9d9d9", "conv": "#9ecae1", "backbone": "#6baed6", "head": "#fdd0a2", "output": "#a1d99b"}


def plot_architecture(stages: list, title: str, out: Path) -> Path:
    """The model as a row of blocks, one per stage (`imgcls.models.architecture.Stage`): its layers inside, its
    output shape and parameters below; a block's height follows its feature map's side. PNG, SVG or PDF by `out`'s
    extension."""
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    width, gap = 1.5, 0.55
    sides = [stage.shape[0] if len(stage.shape) == 3 else None for stage in stages]
    largest = max([side for side in sides if side] or [1])
    fig, ax = plt.subplots(figsize=(max(6.0, len(stages) * (width + gap) * 0.8), 4.0))
    for i, (stage, side) in enumerate(zip(stages, sides)):
        x = i * (width + gap)
        height = 0.9 + 2.1 * (side / largest) ** 0.5 if side else 0.9
        y = -height / 2
        ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor=STAGE_COLOURS.get(stage.kind, "#eeeeee"), edgecolor="#333333", linewidth=0.8))
        ax.text(x + width / 2, 0, stage.label, ha="center", va="center", fontsize=8.5)
        below = stage.shape_text + (f"\n{stage.params:,} params" if stage.params else "")
        ax.text(x + width / 2, -1.7, below, ha="center", va="top", fontsize=8.5)
        if i:
            ax.add_patch(FancyArrowPatch((x - gap + 0.05, 0), (x - 0.05, 0), arrowstyle="-|>", mutation_scale=9,
                                         color="#555555", linewidth=0.8))
    ax.set_xlim(-0.2, len(stages) * (width + gap) - gap + 0.2)
    ax.set_ylim(-2.6, 1.9)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, plt)
