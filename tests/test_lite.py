"""Predicting without TensorFlow: data.lite_image is data.pipeline's preprocessing, pixel for pixel, and a .tflite
export predicts on LiteRT alone (imgcls[lite]) with the labels of the TensorFlow path."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from imgcls.data.lite_image import decode_image_lite, resize_antialiased

SIZES = [(61, 83), (500, 375), (7, 300), (224, 224), (3, 2), (1, 1), (333, 47)]  # (h, w): up, down, odd, tiny
TARGETS = [(32, 32), (224, 224), (37, 53)]


def photo(height: int, width: int, seed: int) -> Image.Image:
    """Stripes, a product pattern and noise: every channel busy, so chroma subsampling and DCT rounding show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([128 + 100 * np.sin(x / 7.0), 128 + 100 * np.cos(y / 5.0), (x * y) % 256], -1)
    return Image.fromarray(np.clip(pixels + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_16bit_rgb(image: Image.Image, seed: int) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one), low bytes random: TF reads these as they are."""
    values = np.asarray(image).astype(np.uint32) * 257
    values = (values + np.random.default_rng(seed).integers(0, 257, values.shape)).clip(0, 65535).astype(">u2")
    height, width, _ = values.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\0" + row.tobytes() for row in values)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# Every form the scan lets TensorFlow read as it is (anything else reaches both as an 8-bit PNG).
FORMATS = {
    "jpeg-rgb-420": lambda im, i: encoded(im, "JPEG", quality=90),
    "jpeg-rgb-422": lambda im, i: encoded(im, "JPEG", quality=75, subsampling=1),
    "jpeg-rgb-444": lambda im, i: encoded(im, "JPEG", quality=95, subsampling=0),
    "jpeg-progressive": lambda im, i: encoded(im, "JPEG", quality=85, progressive=True),
    "jpeg-grey": lambda im, i: encoded(im.convert("L"), "JPEG", quality=90),
    "png-rgb": lambda im, i: encoded(im, "PNG"),
    "png-grey": lambda im, i: encoded(im.convert("L"), "PNG"),
    "png-1bit": lambda im, i: encoded(im.convert("L").convert("1"), "PNG"),
    "png-palette": lambda im, i: encoded(im.quantize(200), "PNG"),
    "png-palette-4bit": lambda im, i: encoded(im.quantize(16), "PNG", bits=4),
    "png-rgb-16bit": lambda im, i: png_16bit_rgb(im, i),
    "bmp": lambda im, i: encoded(im, "BMP"),
    "gif": lambda im, i: encoded(im.quantize(64), "GIF"),
}


def agreement(fmt: str, channels: int) -> tuple[int, float]:
    """(largest difference in levels, share of equal pixels) of lite vs TF over SIZES x TARGETS."""
    import tensorflow as tf

    from imgcls.data.pipeline import decode_image

    largest, equal, total = 0, 0, 0
    for i, (height, width) in enumerate(SIZES):
        contents = FORMATS[fmt](photo(height, width, seed=i), i)
        for target in TARGETS:
            expected = decode_image(tf.constant(contents), target, channels).numpy().astype(int)
            got = decode_image_lite(contents, target, channels).astype(int)
            assert got.shape == expected.shape == (*target, channels)
            difference = np.abs(got - expected)
            largest, equal, total = max(largest, int(difference.max())), equal + int((difference == 0).sum()), total + difference.size
    return largest, equal / total


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "png-rgb-16bit"])
def test_lite_preprocessing_gives_tensorflows_pixels_exactly(fmt, channels):
    assert agreement(fmt, channels) == (0, 1.0)


def test_a_16bit_rgb_png_in_colour_gives_tensorflows_pixels_exactly():
    assert agreement("png-rgb-16bit", 3) == (0, 1.0)


def test_a_16bit_rgb_png_in_grey_is_within_one_level_of_tensorflow():
    """libpng greys 16-bit values before dropping the low byte; Pillow only gives the high byte. Known, bounded."""
    largest, equal = agreement("png-rgb-16bit", 1)
    assert largest <= 1 and equal > 0.4


def test_the_resize_is_tensorflows_to_the_last_bit_of_its_floats():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for height, width in SIZES:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for target in TARGETS + [(height, width), (2 * height + 1, width // 2 + 1)]:
            expected = tf.image.resize(pixels, target, method="bilinear", antialias=True).numpy()
            np.testing.assert_array_equal(resize_antialiased(pixels, target), expected)


def every_colour() -> np.ndarray:
    """All 2^24 RGB colours as one 4096 x 4096 image."""
    values = np.arange(1 << 24, dtype=np.uint32)
    return np.stack([values >> 16, (values >> 8) & 255, values & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)


def test_grey_from_a_colour_png_matches_tensorflow_for_every_colour():
    import tensorflow as tf

    from imgcls.data.lite_image import decode_pixels

    contents = encoded(Image.fromarray(every_colour()), "PNG", compress_level=1)
    expected = tf.io.decode_image(contents, channels=1, expand_animations=False).numpy()
    np.testing.assert_array_equal(decode_pixels(contents, 1), expected)


def test_grey_from_a_gif_or_bmp_matches_tensorflows_rgb_to_grayscale_for_every_colour():
    import tensorflow as tf

    from imgcls.data.lite_image import _tf_rgb_to_grayscale

    colours = every_colour()
    expected = tf.image.rgb_to_grayscale(tf.constant(colours)).numpy()[..., 0]
    np.testing.assert_array_equal(_tf_rgb_to_grayscale(colours), expected)


def test_the_lite_preprocessing_imports_no_tensorflow():
    code = ("import sys; from imgcls.data.lite_image import decode_image_lite; from PIL import Image; import io;"
            "b = io.BytesIO(); Image.new('RGB', (9, 7), 'red').save(b, 'JPEG');"
            "print(decode_image_lite(b.getvalue(), (4, 4), 3).shape, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert answer.stdout.strip() == "(4, 4, 3) False False", answer.stderr
