"""Predicting without TensorFlow: data.lite_image is data.pipeline's preprocessing, pixel for pixel, and a .tflite
export predicts on LiteRT alone (imgcls[lite]) with the labels of the TensorFlow path."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder, run_cli, write_config
from PIL import Image

from imgcls.data.lite_image import decode_image_lite, resize_antialiased

REPO = Path(__file__).parents[1]
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


# --------------------------------------------------------------------------- without TensorFlow installed

WITHOUT_TENSORFLOW = "import sys; sys.modules['tensorflow'] = None; sys.argv = ['imgcls', *sys.argv[1:]]; " \
                     "from imgcls.cli import main; main()"


def imgcls_without_tensorflow(*args, cwd=None) -> subprocess.CompletedProcess:
    """`imgcls ARGS` in a process where `import tensorflow` fails, as where it is not installed."""
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def assert_says_what_to_install(result: subprocess.CompletedProcess, command: str):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = " ".join(result.stderr.split())
    assert (f"{command} needs TensorFlow, which is not installed here: pip install 'imgcls[tensorflow]' "
            "(a .tflite model predicts without it: pip install 'imgcls[lite]')") in line


def test_predict_with_a_keras_model_without_tensorflow_says_what_to_install(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"PK")  # never opened: TensorFlow is needed before the model
    (tmp_path / "labels.txt").write_text("a\nb\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "one.png")
    result = imgcls_without_tensorflow("predict", tmp_path / "one.png", "--model", tmp_path / "model.keras")
    assert_says_what_to_install(result, "imgcls predict")


def test_train_without_tensorflow_says_what_to_install(tmp_path):
    config = write_config(tmp_path / "tiny.yaml", make_image_folder(tmp_path / "colours", per_class=4))
    result = imgcls_without_tensorflow("train", config, "--runs-dir", tmp_path / "runs")
    assert_says_what_to_install(result, "imgcls train")


# --------------------------------------------------------------------------- a .tflite export on LiteRT


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory) -> dict[str, Path]:
    """The shared run exported as .tflite and as .keras (the TensorFlow path's baseline)."""
    folders = {}
    for fmt in ("tflite", "keras"):
        folders[fmt] = tmp_path_factory.mktemp("lite") / fmt
        result = run_cli("export", trained_run, "--format", fmt, "--out", folders[fmt])
        assert result.exit_code == 0, result.output
    return folders


MODULES_AFTER = ("import sys, json; sys.argv = ['imgcls', *sys.argv[1:]]; from imgcls.cli import main\n"
                 "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
                 "print(json.dumps({'exit': code, 'tensorflow': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules}),"
                 " file=sys.stderr)")


def imgcls_process(*args, python: str = sys.executable) -> tuple[list[dict], dict]:
    """`imgcls ARGS --json` as its own process: (the predictions, which heavy modules it imported and its exit code)."""
    done = subprocess.run([python, "-c", MODULES_AFTER, *map(str, args), "--json"], capture_output=True, text=True,
                          cwd=Path(python).parent)  # not the repository: its src/ must not shadow what is installed
    facts = json.loads(done.stderr.strip().splitlines()[-1])
    assert facts["exit"] in (0, None), done.stderr
    return json.loads(done.stdout), facts


@pytest.mark.slow
def test_predict_with_a_tflite_export_imports_neither_tensorflow_nor_keras(exports, tiny_data):
    _, facts = imgcls_process("predict", tiny_data / "red" / "000.png", "--model", exports["tflite"])
    assert facts["tensorflow"] is False and facts["keras"] is False


@pytest.mark.slow
@pytest.mark.parametrize("tta", [[], ["--tta"]], ids=["plain", "tta"])
def test_a_tflite_export_without_tensorflow_gives_the_tensorflow_paths_labels(exports, tiny_data, tta):
    lite, _ = imgcls_process("predict", tiny_data, "--model", exports["tflite"], *tta)
    keras, facts = imgcls_process("predict", tiny_data, "--model", exports["keras"], *tta)
    assert facts["tensorflow"] is True  # the baseline did go through TensorFlow
    assert [p["label"] for p in lite] == [p["label"] for p in keras] and len(lite) == 36
    np.testing.assert_allclose([p["confidence"] for p in lite], [p["confidence"] for p in keras], atol=1e-4)


@pytest.mark.slow
def test_pip_install_imgcls_lite_predicts_in_a_venv_without_tensorflow_or_keras(exports, tiny_data, tmp_path):
    """A phone-class board, a CI job, a small container: `pip install imgcls[lite]` and a .tflite export are enough."""
    venv = tmp_path / "lite-venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)  # no --system-site-packages: nothing borrowed
    python = str(venv / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                "--no-cache-dir", f"{REPO}[lite]"], capture_output=True, text=True, timeout=600)
    if installed.returncode != 0 and any(words in installed.stderr for words in
                                         ("Failed to establish a new connection", "Temporary failure in name resolution",
                                          "Network is unreachable", "No matching distribution found for setuptools")):
        pytest.skip(f"pip cannot reach the package index: {installed.stderr.strip().splitlines()[-1]}")
    assert installed.returncode == 0, installed.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True)
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"imgcls", "ai-edge-litert"} <= names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "tensorboard"}

    lite, facts = imgcls_process("predict", tiny_data, "--model", exports["tflite"], python=python)
    keras, _ = imgcls_process("predict", tiny_data, "--model", exports["keras"])
    assert facts["tensorflow"] is False and facts["keras"] is False
    assert [p["label"] for p in lite] == [p["label"] for p in keras]
