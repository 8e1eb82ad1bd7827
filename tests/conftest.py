"""Shared fixtures: tiny image folders the tests make themselves, and one trained run.

Images are 32x32 and models tiny, so the whole suite runs in a few minutes on 2 CPU cores.

Nothing may depend on the machine the suite runs on: configs name their
precision (float32 unless a test is about another policy), `runtime.precision:
auto` sees the CPU flags of an AVX2-only CPU in every test that does not inject
its own, and the summary at the end says which policies the runs trained with.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from imgcls.cli import app  # noqa: E402

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
TINY_MODEL = ["model.filters=[8, 16]", "model.dense=[16]"]


def make_image_folder(root: Path, classes=COLOURS, per_class: int = 12, size: int = 32, seed: int = 0) -> Path:
    """root/<class>/<i>.png: noisy solid colours, one colour per class (learnable in an epoch or two)."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def write_config(path: Path, data_dir: Path, **sections) -> Path:
    """A config file for `data_dir` with small, fast defaults; keyword args add sections."""
    config = {
        "data": {"dir": str(data_dir), "image_size": [32, 32], "batch_size": 8, "validation_split": 0.25},
        "model": {"name": "simple_cnn", "filters": [8, 16], "dense": [16]},
        "train": {"epochs": 2},
        "runtime": {"precision": "float32"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config))
    return path


# What `auto` sees in tests: an AVX2-only CPU, a kind measured to train slower in bf16 (auto: float32).
PINNED_CPU_FLAGS = {"sse4_2", "avx", "avx2", "fma"}
_TEMP_ROOT: list[Path] = []  # where this session's runs are, for the summary


@pytest.fixture(scope="session", autouse=True)
def host_independent_auto(tmp_path_factory):
    """`runtime.precision: auto` decides from PINNED_CPU_FLAGS, never from this machine's /proc/cpuinfo."""
    from imgcls import runtime

    _TEMP_ROOT.append(tmp_path_factory.getbasetemp())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime, "cpu_flags", lambda: set(PINNED_CPU_FLAGS))
        yield


_CURRENT_TEST: dict = {}
TRAINING_FIXTURES = {"trained_run", "messy_run"}  # fixtures that train a run for the tests that read it


def pytest_collection_modifyitems(items):
    """A test that reads a run trained by a fixture is as slow as that training: the second tier."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item):
    _CURRENT_TEST.update(name=item.nodeid, slow=item.get_closest_marker("slow") is not None)


@pytest.fixture(scope="session", autouse=True)
def fitting_is_marked_slow():
    """The fast tier fits no model: a test (or the fixture it uses) that calls Model.fit must be marked slow."""
    import keras

    real_fit = keras.Model.fit

    def fit(model, *args, **kwargs):
        if not _CURRENT_TEST.get("slow", True):
            pytest.fail(f"{_CURRENT_TEST['name']} fits a model: mark it @pytest.mark.slow", pytrace=False)
        return real_fit(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keras.Model, "fit", fit)
        yield


def pytest_terminal_summary(terminalreporter):
    """Which precision policies the suite's runs trained with (config.yaml of every run folder), and this host's CPU."""
    from collections import Counter

    from imgcls.runtime import choose_precision, cpu_flags

    trained = Counter()
    # With pytest-xdist the runs are in the workers' temporary folders, below the main process' own.
    factory = getattr(terminalreporter.config, "_tmp_path_factory", None)
    roots = [factory.getbasetemp()] if factory is not None else _TEMP_ROOT
    for root in roots:
        for config in root.rglob("config.yaml"):
            try:
                recorded = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("imgcls") or {}
            except (ValueError, yaml.YAMLError, AttributeError):
                continue  # the tests of damaged run files leave such config.yaml files behind
            if "precision" in recorded:
                trained[recorded["precision"] + (" + XLA" if recorded.get("jit_compile") else "")] += 1
    if trained:
        counts = ", ".join(f"{policy} {n}" for policy, n in sorted(trained.items()))
        terminalreporter.write_line(f"precision policies trained (run folders): {counts}")
    precision, why = choose_precision("auto", [], cpu_flags())
    terminalreporter.write_line(f"this host: auto would pick {precision} ({why}); the tests pinned auto to an AVX2-only CPU")


@pytest.fixture(scope="session", autouse=True)
def user_cache_dir(tmp_path_factory) -> Path:
    """Files `imgcls predict` checks are cached here, not in the real ~/.cache/imgcls."""
    path = tmp_path_factory.mktemp("user-cache")
    os.environ["IMGCLS_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "colours")


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory, tiny_data) -> Path:
    return write_config(tmp_path_factory.mktemp("configs") / "tiny.yaml", tiny_data)


@pytest.fixture(scope="session")
def mobilenet_weights(tmp_path_factory) -> Path:
    """A .weights.h5 saved from a freshly built MobileNetV3Small without its top, as a user would save one."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small.weights.h5"
    keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    return path


def run_cli(*args):
    """`imgcls ARGS` in-process; returns click's Result (exit_code, stdout, stderr). For any fixture scope."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *fragments):
    """A user error as imgcls reports one: exit code 2, no traceback, every fragment in the one line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def cli():
    """`run_cli` as a fixture, for tests."""
    return run_cli


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_config) -> Path:
    """One finished run, shared by the tests that only read artifacts."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = run_cli("train", tiny_config, "--runs-dir", runs_dir, "--name", "tiny")
    assert result.exit_code == 0, result.output
    return (runs_dir / "latest").resolve()


# --------------------------------------------------------------------------- messy real-world files


def noisy_image(colour, size=(32, 32), seed=0) -> Image.Image:
    """A noisy solid colour, `size` = (width, height)."""
    rng = np.random.default_rng(seed)
    pixels = np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming `width` x `height`, without the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def truncated_jpeg(path: Path, colour=(200, 40, 40)) -> Path:
    buffer = path.with_suffix(".full.jpg")
    noisy_image(colour, (64, 64)).save(buffer, quality=95)
    data = buffer.read_bytes()
    buffer.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 32 wide x 16 high, red left and blue right, with EXIF orientation 6 (rotate 90 degrees clockwise).

    Displayed upright it is 16 wide x 32 high: red on top, blue below.
    """
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, :16] = (255, 0, 0)
    pixels[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


MESSY_CLASSES = {"Jennifer Lawrence": (200, 40, 40), "Café": (40, 180, 60), "blue": (40, 60, 200)}
# The bad files of make_messy_folder, as skipped_files.txt must list them.
MESSY_BAD = {
    "Jennifer Lawrence/zero.jpg": "empty file",
    "Jennifer Lawrence/truncated.jpg": "truncated",
    "Café/text.png": "not an image",
    "Café/huge.png": "too large",
}


def make_messy_folder(root: Path, per_class: int = 8) -> Path:
    """A photo folder as people have them: spaces and accents in class names, bad files, odd formats, junk.

    Every class gets `per_class` good JPEGs plus: the bad files of MESSY_BAD;
    blue gets one image of every odd format (BMP named .jpg, CMYK JPEG, 16-bit
    PNG, palette PNG with transparency, animated GIF, WebP, TIFF, EXIF-rotated
    JPEG); notes.txt and .DS_Store are not images; `empty` has no files at all.
    """
    for index, (name, colour) in enumerate(MESSY_CLASSES.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noisy_image(colour, seed=10 * index + i).save(folder / f"{i:02d}.jpg", quality=95)
    people, cafe, blue = (root / name for name in MESSY_CLASSES)
    (people / "zero.jpg").write_bytes(b"")
    truncated_jpeg(people / "truncated.jpg")
    (cafe / "text.png").write_text("this is a text file, not a PNG")
    (cafe / "huge.png").write_bytes(png_header(15_000, 15_000))
    colour = MESSY_CLASSES["blue"]
    noisy_image(colour, seed=90).save(blue / "bmp named.jpg", format="BMP")
    noisy_image(colour, seed=91).convert("CMYK").save(blue / "cmyk.jpg")
    Image.fromarray(np.full((32, 32), 20_000, np.uint16)).save(blue / "sixteen bit.png")
    palette = noisy_image(colour, seed=92).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(blue / "palette.png", transparency=0)
    frames = [noisy_image(colour, seed=93), noisy_image((255, 0, 255), seed=94)]
    frames[0].save(blue / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    noisy_image(colour, seed=95).save(blue / "photo.webp")
    noisy_image(colour, seed=96).save(blue / "scan.tiff")
    exif_rotated_jpeg(blue / "rotated.jpg")
    (blue / "notes.txt").write_text("labels checked by Ana")
    (blue / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "empty").mkdir()
    return root


# --------------------------------------------------------------------------- training in-process, with a probe


@dataclass
class Training:
    """What `imgcls train` would have ended with: its exit code and what it logged, plus the run and its metrics."""

    exit_code: int
    stderr: str
    run: Path | None = None
    metrics: dict | None = None

    @property
    def output(self) -> str:
        return self.stderr


def training(config=None, *overrides, runs_dir, resume=False, force=False, stop_after_epoch=None, how=None,
             mid_epoch=False, final_weights=None) -> Training:
    """`imgcls train` through `imgcls.launch.launch_training`, with a probe added by its public `callbacks` hook.

    The probe stops training after epoch `stop_after_epoch` (1-based), or with
    `mid_epoch` during the next one, by raising KeyboardInterrupt as Ctrl-C
    does or sending the signal `how` to this process; `final_weights` (a
    list) receives the model's weights at the end of every fit.
    """
    import keras

    from imgcls.errors import ImgclsError
    from imgcls.launch import exit_code, launch_training

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            if not mid_epoch and stop_after_epoch is not None and epoch + 1 == stop_after_epoch:
                stop()

        def on_train_batch_end(self, batch, logs=None):
            if mid_epoch and self.epoch == stop_after_epoch and batch == 1:
                stop()

        def on_train_end(self, logs=None):
            if final_weights is not None:  # each phase's fit ends: keep the last
                final_weights[:] = self.model.get_weights()

    def stop():
        if how is None:
            raise KeyboardInterrupt
        os.kill(os.getpid(), how)

    lines: list[str] = []
    log = lambda *parts, **_: lines.append(" ".join(str(part) for part in parts))  # noqa: E731
    try:
        result = launch_training(config, list(overrides), runs_dir=runs_dir, resume=resume, force=force,
                                 callbacks=[Probe()], log=log)
    except ImgclsError as exc:
        return Training(2, "\n".join([*lines, f"error: {exc}"]))
    if result is None:
        return Training(0, "\n".join(lines))
    run, metrics = result
    return Training(exit_code(metrics), "\n".join(lines), run, metrics)


@contextmanager
def read_only(folder: Path):
    """`folder` made really read-only, for root too: nothing can be created in it until the block ends.

    chmod does not stop root (CI runs as root), so root sets the immutable flag (chattr +i), which the
    kernel enforces for everyone; another user gets chmod 555.
    """
    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("this file system cannot make a folder read-only for root (chattr +i)")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def training_process_after_its_first_epoch(config: Path, runs_dir: Path) -> subprocess.Popen:
    """`imgcls train` as a process, returned once its first epoch is backed up (for signals, as a terminal sends them)."""
    # SIGINT as a terminal gives it: not inherited as ignored (pytest-xdist's workers ignore it).
    process = subprocess.Popen([sys.executable, "-m", "imgcls", "train", str(config), "--runs-dir", str(runs_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not list(runs_dir.glob("*/backup/epoch-*")):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail(f"training did not finish an epoch: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return process
