"""Time the pre-flight scan: a first scan, then a rescan of the unchanged folder (answered by the cache).

    python scripts/bench_scan.py                 # 10,000 small PNGs in 10 classes, in a temporary folder
    python scripts/bench_scan.py --files 50000 --keep /tmp/bench

Prints both times; the rescan should take well under a second per 10,000 files.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.data.folders import scan_folder


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
    finally:
        if args.keep is None:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
