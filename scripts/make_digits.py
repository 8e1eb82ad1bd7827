"""Write the demo dataset: scikit-learn's copy of the UCI handwritten digits as PNGs.

    pip install scikit-learn && python scripts/make_digits.py

1,797 grayscale 8x8 images (16 grey levels) of the digits 0-9, upscaled to
32x32 and written to data/digits/<digit>/<index>.png. The output is committed,
so users do not need scikit-learn; rerunning gives identical files.
Source: UCI ML "Optical Recognition of Handwritten Digits" (CC BY 4.0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "digits")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()

    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        folder = args.out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.round(pixels * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
        image = Image.fromarray(grey, mode="L").resize((args.size, args.size), Image.Resampling.BICUBIC)
        image.save(folder / f"{index:04d}.png", optimize=True)
    print(f"wrote {len(digits.images)} images to {args.out}")


if __name__ == "__main__":
    main()
