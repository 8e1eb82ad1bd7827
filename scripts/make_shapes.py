"""A synthetic colour dataset harder than digits: shape x texture x colour classes, with clutter.

    python scripts/make_shapes.py /tmp/shapes            # 12 classes x 80 images, 64x64 JPEG

Class = shape (circle, square, triangle) x texture (stripes, dots) x palette
(warm: red to yellow, cool: cyan to violet), e.g. `triangle_dots_cool`.
Everything else varies at random: object size (radius 11-22 px), position,
rotation, stripe angle and period, dot spacing, the two texture colours
within the palette, the background (a smooth blend of two random colours
from any hue), a smaller distractor blob of any colour and shape, Gaussian
noise and JPEG compression. No real photos are available offline here (the
installed packages ship four sample images), so this set stands in for a
small colour photo dataset: a model must learn shape, texture and colour
together and ignore clutter.
"""

from __future__ import annotations

import argparse
import colorsys
import itertools
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle")
TEXTURES = ("stripes", "dots")
PALETTES = {"warm": (0.0, 0.16), "cool": (0.5, 0.78)}  # hue ranges (0-1)
CLASSES = [f"{s}_{t}_{p}" for s, t, p in itertools.product(SHAPES, TEXTURES, PALETTES)]


def _colour(rng, hues) -> np.ndarray:
    h = rng.uniform(*hues)
    return 255 * np.array(colorsys.hsv_to_rgb(h % 1.0, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)))


def _mask(shape: str, xx, yy, cx, cy, r, angle) -> np.ndarray:
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    if shape == "circle":
        return u ** 2 + v ** 2 <= r ** 2
    if shape == "square":
        return (np.abs(u) <= 0.85 * r) & (np.abs(v) <= 0.85 * r)
    # triangle: three half-planes of an equilateral triangle with circumradius r
    inside = np.ones_like(u, bool)
    for k in range(3):
        a = angle + 2 * np.pi * k / 3
        inside &= (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a) <= 0.5 * r
    return inside


def _texture(texture: str, xx, yy, rng) -> np.ndarray:
    if texture == "stripes":
        a, period = rng.uniform(0, np.pi), rng.uniform(4, 7)
        return np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period) > 0
    period = rng.uniform(5, 8)
    return (np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)) > 0.35


def make_image(label: str, size: int, rng) -> np.ndarray:
    shape, texture, palette = label.split("_")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # background: a smooth gradient between two random colours
    t = ((xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / size + 1) / 2
    image = (1 - t)[..., None] * _colour(rng, (0, 1)) * 0.7 + t[..., None] * _colour(rng, (0, 1)) * 0.7
    # distractor: a small plain blob of any colour and shape
    d = size * rng.uniform(0.07, 0.12)
    blob = _mask(str(rng.choice(SHAPES)), xx, yy, rng.uniform(d, size - d), rng.uniform(d, size - d), d, rng.uniform(0, np.pi))
    image[blob] = _colour(rng, (0, 1))
    # the object: shape filled with a two-colour texture from its palette
    r = size * rng.uniform(0.17, 0.34)
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    inside = _mask(shape, xx, yy, cx, cy, r, rng.uniform(0, 2 * np.pi))
    pattern = _texture(texture, xx, yy, rng)
    hues = PALETTES[palette]
    first, second = _colour(rng, hues), _colour(rng, hues) * 0.45
    image[inside & pattern] = first
    image[inside & ~pattern] = second
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_shapes(root: Path, per_class: int = 80, size: int = 64, seed: int = 0) -> Path:
    """root/<class>/<i>.jpg for the 12 classes; returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in CLASSES:
        folder = Path(root) / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(make_image(label, size, rng)).save(folder / f"{i:04d}.jpg", quality=90)
    return Path(root)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_shapes(args.root, args.per_class, args.size, args.seed))
