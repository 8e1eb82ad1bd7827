"""The pre-flight scan: every real-world image decided by content, bad files named, junk ignored, results cached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    MESSY_BAD, exif_rotated_jpeg, make_image_folder, make_messy_folder, png_header, read_only, truncated_jpeg,
)
from PIL import Image

from imgcls.data.pipeline import load_image
from imgcls.errors import ImgclsError
from imgcls.data.folders import scan_folder
from imgcls.data.scan import BACKGROUND, check_file, scan_files
from imgcls.data.scan_cache import CACHE_DIR_NAME


def loaded(path: Path, size=(8, 8), channels=3) -> np.ndarray:
    """What training sees of one file: the scan's readable path through load_image."""
    [found], _ = scan_files([path])
    return load_image(found.readable, size, channels).numpy()


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("name, make, reason", [
    ("zero.jpg", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    ("truncated.jpg", truncated_jpeg, "truncated"),
    ("text.png", lambda p: p.write_text("not a png at all"), "not an image"),
    ("huge.png", lambda p: p.write_bytes(png_header(15_000, 15_000)), "too large"),
    ("bomb.png", lambda p: p.write_bytes(png_header(100_000, 100_000)), "too large"),
])
def test_bad_files_are_named_with_the_reason(tmp_path, name, make, reason):
    path = tmp_path / name
    make(path)
    check = check_file(path)
    assert check.kind == "bad" and reason in check.reason


def test_truncated_jpeg_is_skipped_and_named(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=3)
    truncated_jpeg(data / "red" / "broken.jpg")
    scan = scan_folder(data)
    assert [path for path, _ in scan.bad] == ["red/broken.jpg"]
    assert len(scan.files) == 9 and not any("broken" in f for f in scan.files)


def test_on_bad_image_error_makes_a_bad_file_an_error_naming_it(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    (data / "red" / "zero.jpg").write_bytes(b"")
    with pytest.raises(ImgclsError, match=r"red/zero\.jpg \(empty file.*data\.on_bad_image: skip"):
        scan_folder(data, on_bad_image="error")


# --------------------------------------------------------------------------- formats, by content


def test_bmp_named_jpg_is_read_by_its_content(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path, format="BMP")
    assert check_file(path).format == "BMP"
    assert tuple(loaded(path)[4, 4]) == (10, 200, 30)


def test_image_without_an_image_extension_is_found_by_content_and_junk_is_ignored(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    Image.new("RGB", (8, 8)).save(data / "red" / "export.dat", format="PNG")
    (data / "red" / "labels.csv").write_text("file,label\n")
    (data / "red" / "notes.txt").write_text("")
    (data / "red" / ".DS_Store").write_bytes(b"\0\1")
    (data / "red" / ".thumbs").mkdir()
    (data / "red" / ".thumbs" / "a.png").write_bytes(b"")
    scan = scan_folder(data)
    assert any(f.endswith("export.dat") for f in scan.files)
    assert len(scan.files) == 7 and scan.ignored == 3 and scan.bad == []


@pytest.mark.parametrize("name, save, expected", [
    ("cmyk.jpg", lambda p: Image.new("RGB", (8, 8), (200, 40, 40)).convert("CMYK").save(p, quality=100), (200, 40, 40)),
    ("progressive.jpg", lambda p: Image.new("RGB", (8, 8), (200, 40, 40)).save(p, progressive=True, quality=100), (200, 40, 40)),
    ("photo.webp", lambda p: Image.new("RGB", (8, 8), (10, 120, 250)).save(p, lossless=True), (10, 120, 250)),
    ("scan.tiff", lambda p: Image.new("RGB", (8, 8), (10, 120, 250)).save(p), (10, 120, 250)),
    # 40,000 of 65,535 is 156 of 255: scaled, not clipped to 255.
    ("sixteen.png", lambda p: Image.fromarray(np.full((8, 8), 40_000, np.uint16)).save(p), (156, 156, 156)),
    # Fully transparent pixels are composited on the documented background.
    ("palette.png", lambda p: Image.new("P", (8, 8), 0).save(p, transparency=0), BACKGROUND),
    ("alpha.png", lambda p: Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(p), BACKGROUND),
    ("grey-alpha.png", lambda p: Image.new("LA", (8, 8), (0, 0)).save(p), BACKGROUND),
    ("first-frame.gif", lambda p: Image.new("RGB", (8, 8), (0, 255, 0)).save(
        p, save_all=True, append_images=[Image.new("RGB", (8, 8), (255, 0, 255))], duration=50), (0, 255, 0)),
])
def test_every_real_world_format_loads_with_the_right_pixels(tmp_path, name, save, expected):
    path = tmp_path / name
    save(path)
    pixels = loaded(path)
    assert pixels.shape == (8, 8, 3)
    np.testing.assert_allclose(pixels[4, 4], expected, atol=3)


def test_exif_rotated_jpeg_loads_upright(tmp_path):
    path = exif_rotated_jpeg(tmp_path / "phone.jpg")
    pixels = loaded(path, size=(32, 16)).astype(int)  # upright: 32 high, 16 wide
    top, bottom = pixels[4, 8], pixels[28, 8]
    assert top[0] > 200 and top[2] < 50, top  # red on top
    assert bottom[2] > 200 and bottom[0] < 50, bottom  # blue below


def test_grayscale_images_become_three_channels_for_rgb_models(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (8, 8), 90).save(path)
    assert tuple(loaded(path, channels=3)[2, 2]) == (90, 90, 90)


# --------------------------------------------------------------------------- folders


def test_messy_folder_keeps_every_good_image_and_names_every_bad_file(tmp_path):
    data = make_messy_folder(tmp_path / "photos")
    scan = scan_folder(data, allow_empty_classes=True)
    assert scan.class_names == ["Café", "Jennifer Lawrence", "blue"] and scan.dropped_classes == ["empty"]
    assert {path for path, _ in scan.bad} == set(MESSY_BAD)
    for path, reason in scan.bad:
        assert MESSY_BAD[path] in reason
    assert len(scan.files) == 3 * 8 + 8  # 8 per class, plus blue's 8 odd formats
    assert scan.ignored == 2  # notes.txt, .DS_Store
    assert all(Path(r).is_file() for r in scan.readable)


def test_converted_files_live_in_the_hidden_cache_not_in_class_folders(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    Image.new("RGB", (8, 8)).save(data / "red" / "photo.webp")
    scan = scan_folder(data)
    converted = [r for f, r in zip(scan.files, scan.readable) if f != r]
    assert len(converted) == 1 and Path(converted[0]).parent == data / CACHE_DIR_NAME / "converted"
    again = scan_folder(data)
    assert again.class_names == ["blue", "green", "red"] and len(again.files) == 7


def test_rescan_answers_from_the_cache_and_rechecks_changed_files(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=3)
    assert scan_folder(data).cached == 0
    assert scan_folder(data).cached == 9
    victim = data / "red" / "001.png"
    victim.write_bytes(victim.read_bytes()[:40])
    os.utime(victim, ns=(1, 1))  # a new mtime even on coarse file-system clocks
    rescan = scan_folder(data)
    assert rescan.cached == 8 and [path for path, _ in rescan.bad] == ["red/001.png"]


def test_read_only_data_folder_caches_in_the_user_cache_dir(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "d", per_class=2)
    Image.new("RGB", (8, 8)).save(data / "red" / "photo.webp")
    monkeypatch.setenv("IMGCLS_CACHE_DIR", str(tmp_path / "user-cache"))
    with read_only(data):
        scan = scan_folder(data)
        assert not (data / CACHE_DIR_NAME).exists()
    [converted] = [r for f, r in zip(scan.files, scan.readable) if f != r]
    assert Path(converted).is_relative_to(tmp_path / "user-cache") and Path(converted).is_file()


def test_empty_class_is_an_error_unless_allow_empty_classes_drops_it(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    (data / "empty").mkdir()
    with pytest.raises(ImgclsError, match=r"d/empty: no usable images.*data\.allow_empty_classes"):
        scan_folder(data)
    scan = scan_folder(data, allow_empty_classes=True)
    assert scan.class_names == ["blue", "green", "red"] and scan.dropped_classes == ["empty"]


def test_class_with_only_bad_files_counts_as_empty(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    (data / "broken").mkdir()
    (data / "broken" / "a.jpg").write_bytes(b"")
    with pytest.raises(ImgclsError, match=r"broken: no usable images in this class folder \(1 bad file"):
        scan_folder(data)


def test_dropping_empty_classes_still_needs_two_classes(tmp_path):
    data = make_image_folder(tmp_path / "d", classes={"only": (1, 2, 3)}, per_class=2)
    (data / "empty").mkdir()
    with pytest.raises(ImgclsError, match="only 1 class"):
        scan_folder(data, allow_empty_classes=True)


def test_scanning_does_not_import_tensorflow(tiny_data):
    code = (f"import sys; from imgcls.data.folders import scan_folder; scan_folder({str(tiny_data)!r});"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr

