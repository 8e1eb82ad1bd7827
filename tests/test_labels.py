"""Data in the shapes people have it: labels in file names or a CSV file, train/val/test folders, TFDS by name,
and a competition's submission file written from an unlabelled test folder."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import COLOURS, assert_user_error, make_image_folder, truncated_jpeg, write_config
from imgcls.config import load_config
from imgcls.data.plan import plan_data
from imgcls.errors import ImgclsError

FOOD = {"0": (200, 40, 40), "1": (40, 180, 60), "2": (40, 60, 200)}  # Food-11's labels are numbers


def save_noisy(path: Path, colour, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_flat_folder(folder: Path, per_class: int = 6, labelled: bool = True, seed: int = 0) -> Path:
    """Food-11's shape: folder/<label>_<n>.png, or folder/<n>.png for its unlabelled test/."""
    n = 0
    for label, colour in FOOD.items():
        for _ in range(per_class):
            save_noisy(folder / (f"{label}_{n}.png" if labelled else f"{n}.png"), colour, seed + n)
            n += 1
    return folder


def make_food11_like(root: Path) -> Path:
    make_flat_folder(root / "train", per_class=8)
    make_flat_folder(root / "valid", per_class=3, seed=100)
    make_flat_folder(root / "test", per_class=2, labelled=False, seed=200)
    return root


def make_kaggle_like(root: Path) -> Path:
    """train/<id>.png + train.csv (id without extension, label; one row whose file is missing), test/ +
    sample_submission.csv."""
    rows = []
    for n, (label, colour) in enumerate((name, colour) for name, colour in COLOURS.items() for _ in range(6)):
        image_id = f"img{n:03d}"
        save_noisy(root / "train" / f"{image_id}.png", colour, n)
        rows.append([image_id, label])
    rows.append(["img999", "red"])  # its file is missing
    write_rows(root / "train.csv", ["id", "label"], rows)
    ids = []
    for n, colour in enumerate(list(COLOURS.values()) * 2):
        save_noisy(root / "test" / f"t{n}.png", colour, 300 + n)
        ids.append(f"t{n}")
    write_rows(root / "sample_submission.csv", ["id", "label"], [[i, ""] for i in reversed(ids)])
    return root


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def plan(data: dict, **overrides):
    return plan_data(load_config(raw={"data": data, **overrides}))


# --------------------------------------------------------------------------- labels from file names


def test_file_names_label_a_flat_folder_with_numeric_classes_in_numeric_order(tmp_path):
    data = make_flat_folder(tmp_path / "train")
    for n in range(8, 11):  # label 10 sorts after 2, as a number
        save_noisy(data / f"10_{n}.png", (120, 120, 120), n)
    result = plan({"dir": str(data), "labels": "filename", "filename_pattern": r"^(\d+)_"})
    assert result.class_names == ["0", "1", "2", "10"]
    assert sum(len(part) for part in result.subsets.values()) == 21


def test_class_names_map_numeric_labels_to_names(tmp_path):
    data = make_flat_folder(tmp_path / "train")
    result = plan({"dir": str(data), "labels": "filename", "filename_pattern": r"^(?P<label>\d+)_",
                   "class_names": ["bread", "dairy", "dessert"]})
    assert result.class_names == ["bread", "dairy", "dessert"]
    assert np.sum(list(result.counts().values()), axis=0).tolist() == [6, 6, 6]


def test_a_file_whose_name_does_not_match_is_a_named_bad_file(tmp_path):
    data = make_flat_folder(tmp_path / "train")
    save_noisy(data / "holiday.png", (0, 0, 0), 1)
    result = plan({"dir": str(data), "labels": "filename", "filename_pattern": r"^(\d+)_"})
    assert ("holiday.png", "its name does not match data.filename_pattern") in result.bad_files()
    with pytest.raises(ImgclsError, match="holiday.png"):
        plan({"dir": str(data), "labels": "filename", "filename_pattern": r"^(\d+)_", "on_bad_image": "error"})


def test_a_pattern_that_matches_no_file_names_the_first_three_it_tried(cli, tmp_path):
    data = make_flat_folder(tmp_path / "train")
    config = write_config(tmp_path / "c.yaml", data, data={"labels": "filename", "filename_pattern": r"^food(\d+)-"})
    assert_user_error(cli("inspect", config), "data.filename_pattern", "matches no file name", "0_0.png, 0_1.png, 0_2.png")


# --------------------------------------------------------------------------- labels from a CSV file


def test_a_csv_file_labels_images_by_id_and_names_the_row_without_a_file(tmp_path):
    root = make_kaggle_like(tmp_path / "comp")
    (root / "train" / "img000.png").rename(root / "train" / "extra.png")  # a file without a row
    result = plan({"dir": str(root / "train"), "labels": "csv", "labels_file": str(root / "train.csv")})
    assert result.class_names == ["blue", "green", "red"]
    assert ("extra.png", "no row in train.csv") in result.bad_files()
    reasons = " ".join(reason for _, reason in result.bad_files())
    assert "'img999' names no image" in reasons and "'img000' names no image" in reasons
    assert sum(len(part) for part in result.subsets.values()) == 17


def test_a_broken_image_with_a_row_is_reported_once_as_broken(tmp_path):
    root = make_kaggle_like(tmp_path / "comp")
    truncated_jpeg(root / "train" / "img000.jpg")
    (root / "train" / "img000.png").unlink()
    result = plan({"dir": str(root / "train"), "labels": "csv", "labels_file": str(root / "train.csv")})
    bad = result.bad_files()
    assert [path for path, _ in bad if "img000" in path] == ["img000.jpg"]
    assert not any("'img000'" in reason for _, reason in bad)


def test_one_hot_label_columns_give_the_classes(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=4)
    rows = [[f"{name}/{i:03d}.png", *[int(name == other) for other in ("red", "green", "blue")]]
            for name in ("red", "green", "blue") for i in range(4)]
    labels = write_rows(tmp_path / "labels.csv", ["image", "red", "green", "blue"], rows)
    result = plan({"dir": str(data), "labels": "csv", "labels_file": str(labels), "path_column": "image",
                   "label_column": ["red", "green", "blue"]})
    assert result.class_names == ["blue", "green", "red"]
    assert sum(len(part) for part in result.subsets.values()) == 12


def test_two_rows_that_disagree_about_a_file_leave_it_out_named(tmp_path):
    root = make_kaggle_like(tmp_path / "comp")
    with open(root / "train.csv", "a", encoding="utf-8") as f:
        f.write("img001,green\n")
    result = plan({"dir": str(root / "train"), "labels": "csv", "labels_file": str(root / "train.csv")})
    assert "give it two labels" in dict(result.bad_files())["img001.png"]


@pytest.mark.parametrize("content, fragments", [
    (None, ["data.labels_file", "not found"]),
    (b"", ["empty"]),
    (b"id,label\n\xff\xfe,red\n", ["not UTF-8"]),
    (b"id,lable\nimg000,red\n", ["data.label_column", "no column 'label'", "did you mean lable?"]),
    (b"id,label\nnothing,red\n", ["none of its 1 rows names an image", "data.path_column"]),
    (b"image,blue,green,red\nimg000,1,0,0\nimg001,0,1,0\n", ["data.label_column", "hold only 0 and 1",
                                                               "data.label_column: [blue, green, red]"]),
])
def test_a_bad_labels_file_is_one_line(cli, tmp_path, content, fragments):
    root = make_kaggle_like(tmp_path / "comp")
    labels = tmp_path / "labels.csv"
    if content is not None:
        labels.write_bytes(content)
    data = {"labels": "csv", "labels_file": str(labels), "on_bad_image": "error"}
    if b"lable" in (content or b""):
        data["label_column"] = "label"
    assert_user_error(cli("inspect", write_config(tmp_path / "c.yaml", root / "train", data=data)), *fragments)


# --------------------------------------------------------------------------- the keys, checked together


@pytest.mark.parametrize("data, fragment", [
    ({"labels": "csv"}, "data.labels_file: needed by data.labels: csv"),
    ({"labels": "filename"}, "data.filename_pattern: needed by data.labels: filename"),
    ({"labels": "filename", "filename_pattern": r"^\d+_"}, "needs one group around the label"),
    ({"labels": "filename", "filename_pattern": "(["}, "is not a regular expression"),
    ({"filename_pattern": r"^(\d+)_"}, "data.filename_pattern: only used with data.labels: filename"),
    ({"class_names": ["a", "b"]}, "data.class_names: only used with data.labels: filename or csv"),
    ({"labels": "names"}, "data.labels"),
    ({"label_file": "x.csv"}, "did you mean data.labels_file?"),
    ({"tfds": "tf_flowers"}, "data.tfds: a dataset instead of data.dir; give only one of them"),
    ({"labels": "filename", "filename_pattern": "^(.)", "class_names": ["a", "b", "a"]}, "data.class_names: a given twice"),
    ({"tfds_split": "train"}, "data.tfds_split: only used with data.tfds"),
    ({"tfds": "tf_flowers", "dir": None, "tfds_split": {"train": "train", "valid": "validation"}},
     "data.tfds_split.valid: unknown subset; did you mean data.tfds_split.val?"),
])
def test_label_keys_are_checked_together_in_one_line(cli, tmp_path, data, fragment):
    config = write_config(tmp_path / "c.yaml", tmp_path, data=data)
    assert_user_error(cli("inspect", config), fragment)


# --------------------------------------------------------------------------- split folders found


def test_train_and_test_folders_are_the_train_and_test_subsets(tmp_path):
    root = tmp_path / "coffee_beans"
    make_image_folder(root / "train", per_class=8)
    make_image_folder(root / "test", per_class=3, seed=1)
    result = plan({"dir": str(root)})
    assert result.class_names == ["blue", "green", "red"]
    assert len(result.subsets["test"]) == 9
    assert len(result.subsets["train"]) + len(result.subsets["val"]) == 24  # val drawn from train/
    paths = {row["subset"]: row["path"] for row in result.split_rows()}
    assert paths["train"].startswith("train/") and paths["val"].startswith("train/") and paths["test"].startswith("test/")
    assert "split into train/ (train) + test/ (test)" in result.notes[0]


def test_an_unlabelled_test_folder_is_left_out_and_the_note_says_how_to_predict_it(tmp_path):
    root = make_food11_like(tmp_path / "food11")
    result = plan({"dir": str(root), "labels": "filename", "filename_pattern": r"^(\d+)_"})
    assert set(result.subsets) == {"train", "val"}
    assert len(result.subsets["val"]) == 9  # valid/ is the validation set; nothing drawn from train/
    assert "test/ has no labels, so it is left out" in result.notes[0] and "--format kaggle" in result.notes[0]


def test_a_split_folder_and_val_dir_together_is_one_line(cli, tmp_path):
    root = make_food11_like(tmp_path / "food11")
    config = write_config(tmp_path / "c.yaml", root, data={"labels": "filename", "filename_pattern": r"^(\d+)_",
                                                          "val_dir": str(root / "valid"), "validation_split": None})
    assert_user_error(cli("inspect", config), "data.val_dir", "has its own valid/ folder")


def test_a_val_dir_completes_a_train_test_split(tmp_path):
    root = tmp_path / "coffee_beans"
    make_image_folder(root / "train", per_class=6)
    make_image_folder(root / "test", per_class=2, seed=1)
    make_image_folder(tmp_path / "beans_val", per_class=2, seed=2)
    result = plan({"dir": str(root), "val_dir": str(tmp_path / "beans_val")})
    assert {name: len(part) for name, part in result.subsets.items()} == {"train": 18, "val": 6, "test": 6}
    roots = {name: part.root for name, part in result.subsets.items()}
    assert roots == {"train": root, "val": tmp_path / "beans_val", "test": root}


def test_a_train_folder_alone_is_the_training_set_and_csv_ids_are_found_one_folder_down(tmp_path):
    root = make_kaggle_like(tmp_path / "comp")
    for path in ("test", "sample_submission.csv"):
        shutil.rmtree(root / path) if path == "test" else (root / path).unlink()
    result = plan({"dir": str(root), "labels": "csv", "labels_file": str(root / "train.csv")})
    assert "split into train/ (train)" in result.notes[0]
    assert sum(len(part) for part in result.subsets.values()) == 18


def test_train_and_test_beside_another_folder_is_one_line(cli, tmp_path):
    for part in ("train", "test", "extra"):
        make_image_folder(tmp_path / "d" / part, per_class=2)
    (tmp_path / "d" / "__MACOSX").mkdir()  # a zip's junk is never data
    assert_user_error(cli("inspect", tmp_path / "d"), "holds train/ and test/, a split data set, beside extra/")


def test_numeric_csv_ids_of_train_do_not_label_the_test_folder(tmp_path):
    root = tmp_path / "comp"
    rows = []
    for n, (label, colour) in enumerate((name, colour) for name, colour in COLOURS.items() for _ in range(5)):
        save_noisy(root / "train" / f"{n}.png", colour, n)
        rows.append([str(n), label])
    for n in range(4):
        save_noisy(root / "test" / f"{n}.png", (90, 90, 90), 100 + n)
    write_rows(root / "train.csv", ["id", "label"], rows)
    result = plan({"dir": str(root), "labels": "csv", "labels_file": str(root / "train.csv")})
    assert set(result.subsets) == {"train", "val"}
    assert "test/ has no labels, so it is left out" in result.notes[0]


def test_both_val_and_valid_folders_is_one_line(cli, tmp_path):
    for part in ("train", "val", "valid"):
        make_image_folder(tmp_path / "d" / part, per_class=2)
    assert_user_error(cli("inspect", tmp_path / "d"), "both val/ and valid/ look like the val folder")


FOOD11_CONFIG = Path(__file__).parents[1] / "configs" / "food11.yaml"


def test_the_food11_seed_config_reads_the_original_layout(tmp_path):
    root = tmp_path / "food11"
    make_flat_folder(root / "train", per_class=4)
    make_flat_folder(root / "valid", per_class=2, seed=50)
    make_flat_folder(root / "test", per_class=1, labelled=False, seed=90)
    result = plan_data(load_config(FOOD11_CONFIG, [f"data.dir={root}"]))
    assert result.class_names == ["0", "1", "2"]
    assert {name: len(part) for name, part in result.subsets.items()} == {"train": 12, "val": 6}


@pytest.mark.slow
def test_the_food11_seed_config_trains_on_the_original_layout(cli, tmp_path):
    root = make_food11_like(tmp_path / "food11")
    small = [f"data.dir={root}", "data.image_size=32", "data.batch_size=8", "train.epochs=1",
             "model.filters=[4, 4, 4, 4, 4]", "model.dense=[8]", "runtime.precision=float32"]
    result = cli("train", FOOD11_CONFIG, *[arg for value in small for arg in ("--set", value)], "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "split into train/ (train) + valid/ (val); test/ has no labels" in result.output
    assert json.loads((tmp_path / "runs" / "latest" / "metrics.json").read_text())["status"] == "finished"


# --------------------------------------------------------------------------- submissions


def prediction(path: str, label: str, probabilities: dict[str, float] | None = None):
    from imgcls.infer.predict import Prediction

    top = sorted((probabilities or {label: 1.0}).items(), key=lambda item: -item[1])
    return Prediction(path, label, top[0][1], [{"label": k, "confidence": v} for k, v in top])


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_submission_has_one_row_per_image_with_ids_from_file_names(tmp_path):
    from imgcls.infer.submission import write_submission

    predictions = [prediction(f"test/{n}.jpg", str(n % 3)) for n in (10, 2, 1)]
    write_submission(tmp_path / "s.csv", predictions, id_column="Id", label_column="Category")
    assert read_rows(tmp_path / "s.csv") == [{"Id": "1", "Category": "1"}, {"Id": "2", "Category": "2"},
                                             {"Id": "10", "Category": "1"}]


def test_a_template_keeps_its_columns_and_row_order(tmp_path):
    from imgcls.infer.submission import Template, write_submission

    template = write_rows(tmp_path / "sample.csv", ["image_id", "breed", "note"], [["b", "x", "keep"], ["a.jpg", "x", ""]])
    predictions = [prediction("test/a.jpg", "cat"), prediction("test/b.jpg", "dog")]
    write_submission(tmp_path / "s.csv", predictions, Template.read(template, ["cat", "dog"], None, None))
    assert read_rows(tmp_path / "s.csv") == [{"image_id": "b", "breed": "dog", "note": "keep"},
                                             {"image_id": "a.jpg", "breed": "cat", "note": ""}]


def test_a_template_with_a_column_per_class_gets_probabilities(tmp_path):
    from imgcls.infer.submission import Template, write_submission

    template = write_rows(tmp_path / "sample.csv", ["id", "dog", "cat"], [["a", "0", "0"]])
    predictions = [prediction("a.png", "cat", {"cat": 0.75, "dog": 0.25})]
    write_submission(tmp_path / "s.csv", predictions, Template.read(template, ["cat", "dog"], None, None))
    assert read_rows(tmp_path / "s.csv") == [{"id": "a", "dog": "0.25", "cat": "0.75"}]


@pytest.mark.parametrize("columns, fragment", [(["id", "cat", "dog", "fox"], "columns that are not classes of the run (fox)"),
                                               (["id", "cat"], "no column for the classes dog")])
def test_a_template_with_columns_per_class_must_name_exactly_the_classes(tmp_path, columns, fragment):
    from imgcls.infer.submission import Template

    template = write_rows(tmp_path / "sample.csv", columns, [["a"] + ["0"] * (len(columns) - 1)])
    with pytest.raises(ImgclsError, match=re.escape(fragment)):
        Template.read(template, ["cat", "dog"], None, None)


def test_template_ids_match_numbered_files_without_their_leading_zeros(tmp_path):
    from imgcls.infer.submission import Template, write_submission

    template = write_rows(tmp_path / "sample.csv", ["Id", "Category"], [["7", ""], ["12", ""]])
    predictions = [prediction("test/0012.jpg", "3"), prediction("test/0007.jpg", "5")]
    write_submission(tmp_path / "s.csv", predictions, Template.read(template, ["3", "5"], None, None))
    assert read_rows(tmp_path / "s.csv") == [{"Id": "7", "Category": "5"}, {"Id": "12", "Category": "3"}]


def test_template_ids_without_images_or_images_without_ids_write_nothing(tmp_path):
    from imgcls.infer.submission import Template, write_submission

    template = write_rows(tmp_path / "sample.csv", ["id", "label"], [["a", ""], ["gone", ""]])
    with pytest.raises(ImgclsError, match=r"1 id\(s\) of the template have no image \(first: gone\); 1 image\(s\) "):
        write_submission(tmp_path / "s.csv", [prediction("a.png", "cat"), prediction("new.png", "dog")],
                         Template.read(template, ["cat", "dog"], None, None))
    assert not (tmp_path / "s.csv").exists()


def test_a_submission_with_an_unreadable_test_image_is_refused_and_not_written(cli, trained_run, tmp_path):
    test = make_flat_folder(tmp_path / "test", per_class=1, labelled=False)
    (test / "9.png").write_bytes(b"")
    result = cli("predict", test, "--run", trained_run, "--csv", tmp_path / "s.csv", "--format", "kaggle")
    assert_user_error(result, "a submission needs every image, and 1 could not be read", "9.png")
    assert not (tmp_path / "s.csv").exists()


def test_kaggle_format_needs_a_csv_file(cli, trained_run):
    assert_user_error(cli("predict", trained_run, "--run", trained_run, "--format", "kaggle"), "--csv submission.csv")


# --------------------------------------------------------------------------- each shape, trained


@pytest.mark.slow
def test_food11_shaped_data_trains_and_its_test_folder_becomes_a_submission(cli, tmp_path):
    root = make_food11_like(tmp_path / "food11")
    config = write_config(tmp_path / "food.yaml", root, data={"labels": "filename", "filename_pattern": r"^(\d+)_"})
    result = cli("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "latest"
    assert json.loads((run / "classes.json").read_text()) == ["0", "1", "2"]
    subsets = {row["subset"]: row["path"].split("/")[0] for row in read_rows(run / "split.csv")}
    assert subsets == {"train": "train", "val": "valid"}

    submission = tmp_path / "submission.csv"
    result = cli("predict", root / "test", "--run", run, "--csv", submission, "--format", "kaggle",
                 "--id-column", "Id", "--label-column", "Category")
    assert result.exit_code == 0, result.output
    rows = read_rows(submission)
    assert [row["Id"] for row in rows] == [str(n) for n in range(6)]  # every test file, numeric order
    assert {row["Category"] for row in rows} <= {"0", "1", "2"}

    # A labelled folder is evaluated with the run's own label source.
    result = cli("evaluate", run, "--data", root / "valid", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 9


@pytest.mark.slow
def test_kaggle_shaped_data_trains_from_its_csv_and_fills_the_sample_submission(cli, tmp_path):
    root = make_kaggle_like(tmp_path / "comp")
    config = write_config(tmp_path / "comp.yaml", root, data={"labels": "csv", "labels_file": str(root / "train.csv")})
    result = cli("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "'img999' names no image" in result.output
    run = tmp_path / "runs" / "latest"
    assert "img999" in (run / "skipped_files.txt").read_text()

    submission = tmp_path / "submission.csv"
    result = cli("predict", root / "test", "--run", run, "--csv", submission, "--template", root / "sample_submission.csv")
    assert result.exit_code == 0, result.output
    assert [row["id"] for row in read_rows(submission)] == [f"t{n}" for n in reversed(range(6))]


@pytest.mark.slow
def test_a_train_test_trio_trains_and_is_tested_on_its_test_folder(cli, tmp_path):
    root = tmp_path / "coffee_beans"
    make_image_folder(root / "train", per_class=8)
    make_image_folder(root / "test", per_class=3, seed=1)
    result = cli("train", write_config(tmp_path / "beans.yaml", root), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "split into train/ (train) + test/ (test)" in result.output
    result = cli("evaluate", tmp_path / "runs" / "latest", "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 9


# --------------------------------------------------------------------------- TensorFlow Datasets


def tfds_config(path: Path, name: str = "tf_flowers", **data) -> Path:
    config = yaml.safe_load(write_config(path, Path(".")).read_text())
    del config["data"]["dir"]
    config["data"].update(tfds=name, **data)
    path.write_text(yaml.safe_dump(config))
    return path


def mock_tfds(num_examples: int):
    testing = pytest.importorskip("tensorflow_datasets.testing", reason="the tfds extra is not installed")
    return testing.mock_data(num_examples=num_examples)


def test_a_tfds_dataset_is_written_out_as_class_folders_and_planned(tmp_path):
    with mock_tfds(12):
        result = plan_data(load_config(tfds_config(tmp_path / "c.yaml", "tf_flowers",
                                                   tfds_split={"train": "train", "test": "test"}, dedupe="off")))
    assert result.class_names == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert result.origin == {"tfds": "tf_flowers", "version": "3.0.1", "splits": {"train": "train", "test": "test"}}
    assert len(result.subsets["test"]) == 12
    assert {row["path"].split("/")[0] for row in result.split_rows()} == {"train", "test"}


def test_a_missing_tfds_package_names_the_extra(cli, tmp_path, monkeypatch):
    import importlib

    real = importlib.import_module

    def without_tfds(name, *args):
        if name == "tensorflow_datasets":
            raise ModuleNotFoundError("No module named 'tensorflow_datasets'", name="tensorflow_datasets")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_tfds)
    assert_user_error(cli("inspect", tfds_config(tmp_path / "c.yaml")), "pip install 'imgcls[tfds]'")


def test_an_unknown_tfds_name_is_one_line_with_a_suggestion(cli, tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")
    assert_user_error(cli("inspect", tfds_config(tmp_path / "c.yaml", "tf_flower")), "no TensorFlow Datasets dataset",
                      "did you mean tf_flowers?")


def test_without_network_a_tfds_download_fails_at_once_saying_where_to_copy_the_data(cli, tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")
    from imgcls.data import tfds

    monkeypatch.setattr(tfds, "_network_reachable", lambda: False)
    assert_user_error(cli("inspect", tfds_config(tmp_path / "c.yaml", "cats_vs_dogs")),
                      "cannot download cats_vs_dogs: no network", "copy a prepared ", "/cats_vs_dogs/", "$TFDS_DATA_DIR")


def test_a_failed_tfds_download_is_one_line(cli, tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")
    from imgcls.data import tfds as imgcls_tfds

    def download_and_prepare(self, *args, **kwargs):
        raise ConnectionError("Failed to establish a new connection:\n   Network is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)
    monkeypatch.setattr(imgcls_tfds, "_network_reachable", lambda: True)
    assert_user_error(cli("inspect", tfds_config(tmp_path / "c.yaml", "cats_vs_dogs")),
                      "could not download and prepare cats_vs_dogs (ConnectionError: Failed to establish a new "
                      "connection: Network is unreachable)", "tensorflow_datasets")


@pytest.mark.parametrize("name, fragment", [("glue/cola", "not an image classification dataset"),
                                            ("mnist/bogus", "'mnist/bogus'"), ("mnist:9.9.9", "'mnist:9.9.9'")])
def test_a_tfds_name_that_cannot_be_used_is_one_line_before_any_download(cli, tmp_path, monkeypatch, name, fragment):
    tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")

    def download_and_prepare(self, *args, **kwargs):
        raise AssertionError("no download expected")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)
    assert_user_error(cli("inspect", tfds_config(tmp_path / "c.yaml", name)), fragment)


@pytest.mark.slow
def test_a_tfds_dataset_trains_and_the_run_records_its_name_and_version(cli, tmp_path):
    with mock_tfds(16):
        result = cli("train", tfds_config(tmp_path / "flowers.yaml"), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((tmp_path / "runs" / "latest" / "config.yaml").read_text())
    assert recorded["imgcls"]["dataset"] == {"tfds": "tf_flowers", "version": "3.0.1", "splits": {"train": "train"}}
    assert json.loads((tmp_path / "runs" / "latest" / "classes.json").read_text())[0] == "daisy"
