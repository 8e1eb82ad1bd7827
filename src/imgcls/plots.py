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


def _save(fig, out: Path, plt, **kwargs) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png", **kwargs)
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
