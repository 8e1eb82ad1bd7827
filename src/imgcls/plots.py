"""Plots: accuracy and loss curves from one or more runs' history.csv.

Reads only run artifacts, so it works on any finished or interrupted run
without TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from imgcls import runs


def plot_history(run_dirs: list[Path], out: Path) -> Path:
    """Accuracy (left) and loss (right), training solid and validation dashed; one colour per run."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(run_dirs):
        history = runs.read_history(run)
        colour = colours[i % len(colours)]
        label = "" if len(run_dirs) == 1 else f"{Path(run).name} "
        epochs = [row["epoch"] for row in history]
        for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            for prefix, style, what in (("", "-", "training"), ("val_", "--", "validation")):
                values = [row.get(prefix + key) for row in history]
                if any(v is not None for v in values):
                    ax.plot(epochs, values, style, color=colour, marker="." if len(epochs) < 30 else None,
                            label=f"{label}{what}")
    for ax, title in ((ax_acc, "Accuracy"), (ax_loss, "Loss")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with runs.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out
