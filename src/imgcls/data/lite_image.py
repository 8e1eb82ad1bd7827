"""The preprocessing without TensorFlow: `data.pipeline.decode_image`'s twin in Pillow and NumPy.

    decode_image_lite / load_image_lite    bytes or a file -> uint8 [h, w, channels], as `decode_image` / `load_image`
    image_batches_lite                     uint8 batches of files, as `pipeline.image_batches`

A .tflite model predicts without TensorFlow (`pip install imgcls[lite]`), but
the rule stands that training and prediction prepare images with one function:
this module is not a second recipe, it reproduces TensorFlow's, step by step,
and tests/test_lite.py holds the two together pixel for pixel over every format
the scan lets TensorFlow read (anything else the scan converted to an 8-bit PNG):

    decode    JPEG: libjpeg's fast integer DCT (TF's default, not Pillow's) with
              "fancy" chroma upsampling and libjpeg's fixed-point YCbCr->RGB;
              grey = the Y plane. PNG: grey from colour by libpng's fixed-point
              weights. GIF/BMP: grey by tf.image.rgb_to_grayscale's float32 weights.
    resize    tf.image.resize(bilinear, antialias=True) is scale_and_translate with
              a triangle kernel widened by the downscale factor: its float32 span
              weights, rows then columns, summed in TF's order (bit-identical floats).
    uint8     round half to even, clip, cast.
"""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import Iterator

import numpy as np

from imgcls.errors import first_line

# tf.image.rgb_to_grayscale's weights (GIF and BMP decode to RGB only, so decode_image greys them this way).
TF_GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)
# libpng's png_set_rgb_to_gray with 0.299 / 0.587, in its 15-bit fixed point (TF's PNG decoder for channels=1).
PNG_GREY_WEIGHTS = (9797, 19234, 3737)


def load_image_lite(path: str | Path, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """`data.pipeline.load_image` without TensorFlow: read, decode, resize (antialiased), uint8 [h, w, channels]."""
    contents = Path(path).read_bytes()
    try:
        return decode_image_lite(contents, image_size, channels)
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoding errors, which do not name the file
        raise OSError(errno.EIO, f"cannot decode it ({first_line(exc, 120)})", str(path)) from None


def decode_image_lite(contents: bytes, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """`data.pipeline.decode_image` without TensorFlow: encoded bytes to uint8 [h, w, channels].

    The twin of `imgcls.data.pipeline.decode_image`, not a second recipe:
    tests/test_lite.py holds the two together pixel for pixel (change one,
    change the other). Only give it bytes
    TensorFlow reads as they are (the scan's `readable` files): JPEG (RGB or
    grey), PNG (RGB, grey, palette; 8 or 16 bit), BMP, GIF (first frame).
    """
    resized = resize_antialiased(decode_pixels(contents, channels), image_size)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def image_batches_lite(readable: list[str], image_size: tuple[int, int], channels: int,
                       batch_size: int = 32) -> Iterator[np.ndarray]:
    """uint8 batches [n, h, w, c] of the images `readable` names, in order: `pipeline.image_batches` without TF."""
    for start in range(0, len(readable), batch_size):
        yield np.stack([load_image_lite(path, image_size, channels) for path in readable[start:start + batch_size]])


# --------------------------------------------------------------------------- decode


def decode_pixels(contents: bytes, channels: int) -> np.ndarray:
    """uint8 [h, w, channels] at the file's size, as `decode_image` has it before the resize."""
    from PIL import Image

    image = Image.open(io.BytesIO(contents))
    if image.format in ("JPEG", "MPO"):
        pixels = _jpeg(image, channels)
    elif image.format == "PNG":
        pixels = _png(image, channels)
    else:  # GIF (first frame) and BMP: TensorFlow decodes them to RGB only
        image.seek(0)
        pixels = np.asarray(image.convert("RGB"))
        pixels = pixels if channels == 3 else _tf_rgb_to_grayscale(pixels)
    return pixels if pixels.ndim == 3 else pixels[..., None]


def _png(image, channels: int) -> np.ndarray:
    if image.mode in ("L", "1"):  # 1, 2 and 4-bit grey are spread over 0..255 by Pillow as by libpng
        grey = np.asarray(image.convert("L"))
        return grey if channels == 1 else np.repeat(grey[..., None], 3, axis=2)
    rgb = np.asarray(image.convert("RGB"))  # palette looked up; 16-bit: the high byte, as libpng's strip_16
    if channels == 3:
        return rgb
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    rc, gc, bc = PNG_GREY_WEIGHTS
    grey = (rc * r + gc * g + bc * b) >> 15  # libpng truncates, and leaves a grey pixel as it is
    return np.where((r == g) & (g == b), r, grey).astype(np.uint8)


def _tf_rgb_to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """tf.image.rgb_to_grayscale on uint8: to [0, 1] float32, weighted, back by truncating x * 255.5."""
    floats = rgb.astype(np.float32) * np.float32(1 / 255)
    w = TF_GREY_WEIGHTS
    grey = floats[..., 0] * w[0] + floats[..., 1] * w[1] + floats[..., 2] * w[2]
    return (grey * np.float32(255.5)).astype(np.uint8)


def _jpeg(image, channels: int) -> np.ndarray:
    """TF decodes JPEG with libjpeg's fast integer DCT and fancy upsampling; Pillow's default is the slow DCT.

    Pillow's draft flag selects the fast DCT but also turns fancy upsampling off,
    so colour comes out as YCbCr with chroma merely repeated: the chroma planes
    are taken at their stored size and upsampled and converted here as libjpeg does.
    """
    layers, (width, height) = image.layer, image.size  # per component: (id, h sampling, v sampling, table)
    if channels == 1 or image.mode == "L":
        image.draft("L", None)  # grey from a colour JPEG is its Y plane, as libjpeg gives it
        image.decoderconfig = (1, 1)  # (scale, draft): draft = the fast DCT
        grey = np.asarray(image)
        return grey if channels == 1 else np.repeat(grey[..., None], 3, axis=2)
    image.draft("YCbCr", None)
    image.decoderconfig = (1, 1)
    ycc = np.asarray(image).astype(np.int32)
    h_max, v_max = max(layer[1] for layer in layers), max(layer[2] for layer in layers)
    cb, cr = (_upsample(ycc[::v_max // layers[k][2], ::h_max // layers[k][1], k],
                        h_max // layers[k][1], v_max // layers[k][2])[:height, :width] for k in (1, 2))
    return _ycc_to_rgb(ycc[..., 0], cb, cr)


def _upsample(plane: np.ndarray, fh: int, fv: int) -> np.ndarray:
    """libjpeg-turbo's chroma upsampling: triangle filters with its rounding biases for 2x, repetition otherwise."""
    if (fh, fv) not in ((2, 2), (2, 1), (1, 2)) or (fh == 2 and plane.shape[1] <= 2):  # as libjpeg-turbo chooses
        return np.repeat(np.repeat(plane, fv, axis=0), fh, axis=1)
    if fv == 2:
        before, after = _neighbours(plane, axis=0)
        rows = np.empty((2 * plane.shape[0], plane.shape[1]), np.int32)
        rows[0::2], rows[1::2] = 3 * plane + before, 3 * plane + after
        if fh == 1:
            return (rows + np.tile([1, 2], plane.shape[0])[:, None]) >> 2
        plane, shift, biases = rows, 4, (8, 7)
    else:
        shift, biases = 2, (1, 2)
    before, after = _neighbours(plane, axis=1)
    out = np.empty((plane.shape[0], 2 * plane.shape[1]), np.int32)
    out[:, 0::2] = (3 * plane + before + biases[0]) >> shift
    out[:, 1::2] = (3 * plane + after + biases[1]) >> shift
    return out


def _neighbours(plane: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The previous and next row (axis 0) or column (axis 1), the edge repeated."""
    first, last = np.take(plane, [0], axis=axis), np.take(plane, [-1], axis=axis)
    inner = plane.shape[axis]
    return (np.concatenate([first, np.take(plane, range(inner - 1), axis=axis)], axis=axis),
            np.concatenate([np.take(plane, range(1, inner), axis=axis), last], axis=axis))


def _ycc_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """libjpeg's YCbCr->RGB: 16-bit fixed-point tables, arithmetic shifts, clipped to 0..255."""
    x = np.arange(256, dtype=np.int64) - 128
    half = 1 << 15

    def fix(value: float) -> int:
        return int(value * 65536 + 0.5)

    red = y + ((fix(1.40200) * x + half) >> 16)[cr]
    green = y + ((-fix(0.34414) * x + half)[cb] + (-fix(0.71414) * x)[cr] >> 16)
    blue = y + ((fix(1.77200) * x + half) >> 16)[cb]
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- resize


def resize_antialiased(pixels: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """tf.image.resize(method="bilinear", antialias=True) of uint8 [h, w, c]: float32 [height, width, c]."""
    height, width = image_size
    starts, weights = _spans(pixels.shape[0], height)
    rows = _gather(pixels, starts, weights, axis=0)  # TF resizes rows first, then columns, in float32
    starts, weights = _spans(pixels.shape[1], width)
    return _gather(rows, starts, weights, axis=1)


def _spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """scale_and_translate's spans for one axis: first input index [out] and float32 weights [out, span].

    The triangle kernel is widened by the downscale factor (antialiasing), never
    narrowed; each output's weights are normalised to sum to one. Every step in
    float32, as TF computes them, so the sums below are bit for bit TF's.
    """
    f32 = np.float32
    inv_scale = f32(1.0 / float(f32(out_size) / f32(in_size)))
    kernel_scale = max(inv_scale, f32(1))
    radius = kernel_scale  # the triangle's radius (1) times the kernel scale
    span = min(2 * int(np.ceil(radius)) + 1, in_size)
    sample = (np.arange(out_size, dtype=f32) + f32(0.5)) * inv_scale
    starts = np.clip(np.ceil(sample - radius - f32(0.5)).astype(np.int64), 0, in_size - 1)
    ends = np.clip(np.floor(sample + radius - f32(0.5)).astype(np.int64), 0, in_size - 1) + 1
    source = starts[:, None] + np.arange(span)
    distance = np.abs(((source.astype(f32) + f32(0.5)) - sample[:, None]) * (f32(1) / kernel_scale))
    weights = np.where((distance < 1) & (source < ends[:, None]), f32(1) - distance, f32(0)).astype(f32)
    total = np.zeros(out_size, f32)
    for k in range(span):  # summed in order, as TF does
        total += weights[:, k]
    usable = np.abs(total) >= 1000 * np.finfo(f32).tiny
    weights = np.where(usable[:, None], weights * (f32(1) / np.where(usable, total, f32(1)))[:, None], f32(0))
    return starts, weights.astype(f32)


def _gather(pixels: np.ndarray, starts: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Weighted sums along `axis`, accumulated span position by span position in float32 (TF's order)."""
    last = pixels.shape[axis] - 1
    shape = [1, 1, 1]
    shape[axis] = len(starts)
    total = np.zeros(pixels.shape[:axis] + (len(starts),) + pixels.shape[axis + 1:], np.float32)
    for k in range(weights.shape[1]):
        taken = np.take(pixels, np.minimum(starts + k, last), axis=axis).astype(np.float32)
        total += weights[:, k].reshape(shape) * taken
    return total
