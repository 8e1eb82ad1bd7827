"""What the data looks like before training: scan summary, bad files, duplicates, class table, statistics, cache.

`imgcls train` prints `print_report` before the first step (and writes the
full list of bad files to skipped_files.txt); `imgcls inspect` prints the same
report, or `data_facts` as JSON, and draws `sample_grid`: up to 5x10 images as the
model will see them (through `load_image`), each titled with its class.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from imgcls.data.plan import DataPlan
from imgcls.data.trio import SUBSET_OF_FOLDER
from imgcls.files import atomic_file, write_text
from imgcls.data.scan import SHOW_BAD

IMBALANCE_RATIO = 0.1  # a class with under a tenth of the largest class's training images gets a warning
GRID_ROWS, GRID_COLUMNS = 5, 10


def data_facts(plan: DataPlan) -> dict[str, Any]:
    """Every fact the report shows, as plain JSON-able values."""
    checks = [check for scan in plan.scans for check in scan.checks]
    counts = plan.counts()
    return {
        "data_dir": str(plan.data_dir),
        "notes": plan.notes,
        **({"dataset": plan.origin} if plan.origin else {}),
        "classes": plan.class_names,
        "images": {name: len(part) for name, part in plan.subsets.items()},
        "counts": {name: dict(zip(plan.class_names, values)) for name, values in counts.items()},
        "small_classes": small_classes(plan),
        "scanned_files": sum(scan.scanned for scan in plan.scans),
        "cached_files": sum(scan.cached for scan in plan.scans),
        "scan_seconds": round(sum(scan.seconds for scan in plan.scans), 3),
        "bad_files": [{"path": path, "reason": reason} for path, reason in plan.bad_files()],
        "ignored_files": sum(scan.ignored for scan in plan.scans),
        "dropped_classes": [name for scan in plan.scans for name in scan.dropped_classes],
        "duplicates": [{"subset": d.subset, "path": plan.relative(d.path), "same_as_subset": d.same_as_subset,
                        "same_as": plan.relative(d.same_as), "dropped": d.dropped} for d in plan.duplicates],
        "formats": dict(Counter(check.format for check in checks).most_common()),
        "converted": dict(Counter(check.convert for check in checks if check.convert).most_common()),
        "sizes": {axis: _spread([getattr(check, axis) for check in checks]) for axis in ("width", "height")},
        "cache": {"mode": plan.cache.mode, "requested": plan.cache.requested, "estimate_bytes": plan.cache.estimate_bytes,
                  "limit_bytes": plan.cache.limit_bytes, "folder": str(plan.cache.folder) if plan.cache.folder else None},
    }


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def small_classes(plan: DataPlan) -> list[str]:
    """Classes with under IMBALANCE_RATIO of the largest class's training images."""
    train = plan.counts()["train"]
    largest = max(train)
    return [name for name, n in zip(plan.class_names, train) if n < IMBALANCE_RATIO * largest]


# --------------------------------------------------------------------------- the printed report


def stderr_log() -> Callable:
    """Where training's progress lines and this report go by default: stderr, as plain text (no Rich markup)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, markup=False, highlight=False).print


def print_report(plan: DataPlan, log: Callable, skipped_file: Path | str | None = None, details: bool = False) -> None:
    """The scan summary, warnings, class table and cache choice, as rich renderables passed to `log`.

    Bad files are named up to SHOW_BAD, then counted and pointed to
    `skipped_file`; `details` adds image formats and sizes (imgcls inspect).
    """
    from rich.text import Text

    info = data_facts(plan)
    for note in plan.notes:
        log(Text(note))
    log(Text(_scan_line(plan, info)))
    bad = plan.bad_files()
    if bad:
        log(Text(f"warning: skipped {len(bad)} bad file(s):", style="yellow"))
        for path, reason in bad[:SHOW_BAD]:
            log(Text(f"  {path}: {reason}"))
        if len(bad) > SHOW_BAD:
            where = f"see {skipped_file}" if skipped_file else "imgcls inspect --json lists them all"
            log(Text(f"  and {len(bad) - SHOW_BAD} more ({where})"))
    for name in info["dropped_classes"]:
        log(Text(f"warning: dropped class {name}: no usable images (data.allow_empty_classes: true)", style="yellow"))
    for scan in plan.scans:
        if scan.nested_classes:
            shown = ", ".join(scan.nested_classes[:5]) + (", ..." if len(scan.nested_classes) > 5 else "")
            fix = ("the images are sorted <class>/<subset>/; imgcls reads <subset>/<class>/ (train/<class>/, "
                   "test/<class>/): swap the two levels" if set(scan.nested_classes) <= set(SUBSET_OF_FOLDER)
                   else "data.dir looks one level too high; point it at the folder of classes (and data.val_dir "
                   "at the validation one)")
            log(Text(f"warning: every class folder of {scan.root} ({', '.join(scan.class_names[:5])}) holds the same "
                     f"folders ({shown}): {fix}", style="yellow"))
    if plan.duplicates:
        _report_duplicates(plan, log)
    log(class_table(plan))
    small = info["small_classes"]
    if small:
        largest = max(plan.counts()["train"])
        log(Text(f"warning: imbalanced classes: {', '.join(small)} have under a tenth of the largest class's "
                 f"{largest} training images; consider train.class_weight: balanced", style="yellow"))
    if details:
        formats = ", ".join(f"{name} {n:,}" for name, n in info["formats"].items())
        sizes = info["sizes"]
        log(Text(f"formats: {formats}"))
        if sizes["width"]:
            log(Text("sizes (width x height): " + ", ".join(
                f"{what} {sizes['width'][what]:g}x{sizes['height'][what]:g}" for what in ("min", "median", "max"))))
    log(Text(str(plan.cache)))


def _scan_line(plan: DataPlan, info: dict[str, Any]) -> str:
    images = sum(len(scan.files) for scan in plan.scans)
    folders = ", ".join(str(scan.root) for scan in plan.scans)
    converted = info["converted"]
    what = [f"{images:,} images"]
    if converted:
        what.append(f"{sum(converted.values()):,} converted for TensorFlow ("
                    + ", ".join(f"{n} {why}" for why, n in converted.items()) + ")")
    what.append(f"{len(info['bad_files']):,} bad")
    what.append(f"{info['ignored_files']:,} ignored (hidden or not images)")
    return (f"scanned {info['scanned_files']:,} files in {folders} in {info['scan_seconds']:.1f} s "
            f"({info['cached_files']:,} from the cache): " + ", ".join(what))


def _report_duplicates(plan: DataPlan, log: Callable) -> None:
    from rich.text import Text

    by_subset = Counter(d.subset for d in plan.duplicates)
    where = " and ".join(f"{n} in {subset}" for subset, n in by_subset.items())
    action = ("left out (data.dedupe: train_only)" if plan.duplicates[0].dropped
              else "kept (data.dedupe: off): validation scores will be optimistic")
    log(Text(f"warning: {len(plan.duplicates)} file(s) are byte-identical to earlier subsets' files ({where}); {action}:",
             style="yellow"))
    for d in plan.duplicates[:SHOW_BAD]:
        log(Text(f"  {d.subset} {plan.relative(d.path)} = {d.same_as_subset} {plan.relative(d.same_as)}"))
    if len(plan.duplicates) > SHOW_BAD:
        log(Text(f"  and {len(plan.duplicates) - SHOW_BAD} more"))


def class_table(plan: DataPlan):
    """Images per class and subset, with the total; small classes marked."""
    from rich.table import Table

    counts = plan.counts()
    small = set(small_classes(plan))
    table = Table(title=None, show_edge=True, header_style="bold")
    table.add_column("class")
    for name in counts:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for i, cls in enumerate(plan.class_names):
        row = [counts[name][i] for name in counts]
        table.add_row(cls + (" (small)" if cls in small else ""), *map(str, row), str(sum(row)),
                      style="yellow" if cls in small else None)
    totals = [sum(values) for values in counts.values()]
    table.add_row("all", *map(str, totals), str(sum(totals)), style="bold")
    return table


def write_skipped(plan: DataPlan, path: Path) -> None:
    """skipped_files.txt: one line per bad file, its path relative to the data folder, a tab, the reason."""
    write_text(path, "".join(f"{p}\t{reason}\n" for p, reason in plan.bad_files()))


# --------------------------------------------------------------------------- the sample grid


def sample_grid(plan: DataPlan, image_size: tuple[int, int], channels: int, out: Path, seed: int = 0) -> Path:
    """Up to 5x10 images, classes taken in turn, each titled with its class, as the model sees them."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    from imgcls.data.pipeline import image_batches

    readable, labels = _pick_samples(plan, GRID_ROWS * GRID_COLUMNS, seed)
    images = np.concatenate(list(image_batches(readable, image_size, channels, batch_size=64)))
    rows = -(-len(images) // GRID_COLUMNS)
    fig = plt.figure(figsize=(20, 2 * rows + 0.5))
    for i, (image, label) in enumerate(zip(images, labels)):
        ax = fig.add_subplot(rows, GRID_COLUMNS, i + 1)
        ax.imshow(image.squeeze(-1) if channels == 1 else image, cmap="gray" if channels == 1 else None, vmin=0, vmax=255)
        title = plan.class_names[label]
        ax.set_title(title if len(title) <= 22 else title[:21] + "…", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=72, format="png")
    plt.close(fig)
    return out


def _pick_samples(plan: DataPlan, count: int, seed: int) -> tuple[list[str], list[int]]:
    """A seeded pick of `count` images that takes the classes in turn, so small classes show up too."""
    rng = np.random.default_rng(seed)
    pools: list[list[str]] = [[] for _ in plan.class_names]
    for part in plan.subsets.values():
        for path, label in zip(part.readable, part.labels):
            pools[label].append(path)
    for pool in pools:
        rng.shuffle(pool)
    readable, labels = [], []
    for depth in range(max(map(len, pools))):
        for index, pool in enumerate(pools):
            if depth < len(pool) and len(readable) < count:
                readable.append(pool[depth])
                labels.append(index)
    return readable, labels
