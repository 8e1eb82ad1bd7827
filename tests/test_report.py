"""What imgcls says about the data: the class table, imbalance, bad files, and `imgcls inspect`."""

from __future__ import annotations

import io
import json

from conftest import MESSY_BAD, make_image_folder, make_messy_folder, noisy_image
from PIL import Image
from rich.console import Console

from imgcls.config import load_config
from imgcls.data.plan import plan_data
from imgcls.data.report import print_report


def report_text(plan, **kwargs) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    print_report(plan, console.print, **kwargs)
    return console.export_text()


def test_class_table_counts_each_subset_and_warns_about_a_small_class(tmp_path):
    make_image_folder(tmp_path, classes={"common": (1, 1, 1)}, per_class=40)
    (tmp_path / "rare").mkdir()
    for i in range(3):
        noisy_image((200, 0, 0), seed=i).save(tmp_path / "rare" / f"{i}.png")
    plan = plan_data(load_config(raw={"data": {"dir": str(tmp_path), "validation_split": 0.25}}))
    text = report_text(plan)
    assert "│ common" in text and "30 │" in text and "10 │" in text  # train and val of common
    assert "warning: imbalanced classes: rare" in text and "class_weight: balanced" in text


def test_many_bad_files_are_named_up_to_ten_then_counted_with_the_file_that_lists_them(tmp_path):
    make_image_folder(tmp_path, per_class=3)
    for i in range(13):
        (tmp_path / "red" / f"bad {i:02d}.jpg").write_bytes(b"")
    plan = plan_data(load_config(raw={"data": {"dir": str(tmp_path)}}))
    text = report_text(plan, skipped_file=tmp_path / "run" / "skipped_files.txt")
    assert "skipped 13 bad file(s)" in text
    assert "red/bad 09.jpg: empty file" in text and "bad 10.jpg" not in text
    assert "and 3 more (see " in text and "skipped_files.txt" in text


def test_inspect_prints_classes_bad_files_formats_and_cache_and_writes_a_sample_grid(cli, tmp_path):
    data = make_messy_folder(tmp_path / "photos")
    grid = tmp_path / "grid.png"
    result = cli("inspect", data, "--set", "data.allow_empty_classes=true", "--set", "data.image_size=32", "--out", grid)
    assert result.exit_code == 0, result.output
    for fragment in ("Café", "Jennifer Lawrence", *MESSY_BAD, "formats: JPEG", "WEBP 1", "TIFF 1",
                     "cache: memory", "dropped class empty", f"sample grid: {grid}"):
        assert fragment in result.stdout, fragment
    with Image.open(grid) as image:
        assert image.width >= 1000 and image.height >= 300  # 10 columns, 5 rows of titled images


def test_inspect_json_has_the_same_facts(cli, tmp_path):
    data = make_messy_folder(tmp_path / "photos")
    config = tmp_path / "photos.yaml"
    config.write_text(f"data: {{dir: '{data}', image_size: 32, allow_empty_classes: true, test_split: 0.2}}\n",
                      encoding="utf-8")
    result = cli("inspect", config, "--json", "--out", tmp_path / "grid.png")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["classes"] == ["Café", "Jennifer Lawrence", "blue"]
    assert {b["path"] for b in facts["bad_files"]} == set(MESSY_BAD)
    assert set(facts["counts"]) == {"train", "val", "test"} and sum(facts["images"].values()) == 32
    assert facts["ignored_files"] == 2 and facts["dropped_classes"] == ["empty"]
    assert facts["formats"]["JPEG"] >= 24 and facts["converted"]["EXIF rotation"] == 1
    assert facts["cache"]["mode"] == "memory" and facts["cache"]["estimate_bytes"] == 32 * 32 * 3 * (
        facts["images"]["train"] + facts["images"]["val"])
    assert facts["sample_grid"].endswith("grid.png")


def test_inspect_names_an_empty_class_folder(cli, tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    (data / "nothing here").mkdir()
    result = cli("inspect", data)
    assert result.exit_code == 2 and "nothing here: no usable images" in result.stderr
