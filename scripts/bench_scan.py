"""Time the pre-flight scan: a first scan, then a rescan of the unchanged folder (answered by the cache), then the
same images labelled by their file names and by a CSV file, against class folders.

    python scripts/bench_scan.py                 # 10,000 small PNGs in 10 classes, in a temporary folder
    python scripts/bench_scan.py --files 50000 --keep /tmp/bench

Prints the times; the rescan should take well under a second per 10,000 files, and labelling by file name or CSV
should cost little over class folders (the ratios).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.data.folders import scan_folder
from imgcls.data.labels import LabelSource


def make_folder(root: Path, files: int, classes: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(files):
        folder = root / f"class {i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="make (or reuse) the folder here instead of a temporary one")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="imgcls-bench-"))
    try:
        if not any(root.glob("class */*.png")):
            start = time.perf_counter()
            make_folder(root, args.files, args.classes)
            print(f"wrote {args.files:,} 16x16 PNGs to {root} in {time.perf_counter() - start:.1f} s")
        for label in ("first scan", "rescan", "rescan"):
            start = time.perf_counter()
            scan = scan_folder(root)
            seconds = time.perf_counter() - start
            print(f"{label}: {len(scan.files):,} images, {scan.cached:,} from the cache, {seconds:.3f} s")
        compare_label_sources(root)
    finally:
        if args.keep is None:
            shutil.rmtree(root)
            shutil.rmtree(flat_copy(root), ignore_errors=True)
            flat_copy(root).with_suffix(".csv").unlink(missing_ok=True)


def flat_copy(root: Path) -> Path:
    return root.with_name(f"{root.name}-flat")


def compare_label_sources(root: Path) -> None:
    """The same images (hard links) as <class>_<n>.png in one flat folder, labelled by file name and by a CSV
    file; each rescanned (cached) and timed against the class folders' rescan."""
    flat, labels = flat_copy(root), flat_copy(root).with_suffix(".csv")
    if not flat.is_dir():
        flat.mkdir()
        rows = ["id,label"]
        for image in sorted(root.glob("class */*.png")):
            label = image.parent.name.removeprefix("class ")
            os.link(image, flat / f"{label}_{image.stem}.png")
            rows.append(f"{label}_{image.stem},{label}")
        labels.write_text("\n".join(rows) + "\n")
    sources = {"class folders": (root, {}),
               "file names": (flat, {"kind": "filename", "filename_pattern": r"^(\d+)_"}),
               "csv file": (flat, {"kind": "csv", "labels_file": labels})}  # read anew by every scan, as in a run
    times = {}
    for name, (folder, options) in sources.items():
        scan_folder(folder, source=LabelSource(**options))  # fills the folder's scan cache
        best = []
        for _ in range(3):  # cached rescans: the labelling is what differs
            start = time.perf_counter()
            scan = scan_folder(folder, source=LabelSource(**options))
            best.append(time.perf_counter() - start)
        times[name] = min(best)
        print(f"rescan, labels from {name}: {len(scan.files):,} images in {len(scan.class_names)} classes, "
              f"{times[name]:.3f} s ({times[name] / times['class folders']:.2f}x class folders)")


if __name__ == "__main__":
    main()
