"""imgcls explain: Grad-CAM that points at what the model looks at, measured on data where the truth is known."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import assert_user_error, write_config

SIZE, OBJECT = 64, 12  # a 12x12 object in a 64x64 image: the box is 3.5% of the image


def noise(rng) -> np.ndarray:
    return rng.integers(0, 120, (SIZE, SIZE, 3), dtype=np.uint8)


def draw(image: np.ndarray, shape: str, x: int, y: int, size: int = OBJECT, colour=(255, 255, 255)) -> np.ndarray:
    picture = Image.fromarray(image)
    pen = ImageDraw.Draw(picture)
    box = (x, y, x + size - 1, y + size - 1)
    if shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "disk":
        pen.ellipse(box, fill=colour)
    else:  # triangle
        pen.polygon([(x, y + size - 1), (x + size - 1, y + size - 1), (x + size // 2, y)], fill=colour)
    return np.asarray(picture)


def make_shapes(root: Path, per_class: int = 120, seed: int = 0) -> dict[str, tuple[int, int, int, int]]:
    """root/<shape>/<n>.png: noise plus one white shape at a random place; returns each file's box (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    boxes = {}
    for shape in ("square", "disk", "triangle"):
        (root / shape).mkdir(parents=True)
        for n in range(per_class):
            x, y = rng.integers(0, SIZE - OBJECT, 2)
            Image.fromarray(draw(noise(rng), shape, x, y)).save(root / shape / f"{n}.png")
            boxes[f"{shape}/{n}.png"] = (x, y, x + OBJECT - 1, y + OBJECT - 1)
    return boxes


def make_marked(root: Path, per_class: int = 120, seed: int = 1) -> dict[str, tuple[int, int, int, int]]:
    """Shortcut learning: the same random shapes in both classes, and a small mark in a corner that says the class
    (class a: top left, class b: bottom right). Returns each file's mark box."""
    rng = np.random.default_rng(seed)
    marks = {"a": (2, 2), "b": (SIZE - 10, SIZE - 10)}
    boxes = {}
    for name, (mx, my) in marks.items():
        (root / name).mkdir(parents=True)
        for n in range(per_class):
            x, y = rng.integers(12, SIZE - OBJECT - 12, 2)
            image = draw(noise(rng), str(rng.choice(["square", "disk", "triangle"])), x, y)
            image = draw(image, "square", mx, my, size=8, colour=(255, 255, 0))
            Image.fromarray(image).save(root / name / f"{n}.png")
            boxes[f"{name}/{n}.png"] = (mx, my, mx + 7, my + 7)
    return boxes


def train_small_cnn(cli, tmp_path: Path, data: Path) -> Path:
    config = write_config(tmp_path / "shapes.yaml", data,
                          data={"image_size": [SIZE, SIZE], "batch_size": 16, "validation_split": 0.2,
                                "augment_flip": "none"},
                          model={"filters": [16, 32, 64], "dense": [], "head": "gap", "head_dropout": 0.0},
                          train={"epochs": 25, "learning_rate": 0.003},
                          callbacks={"early_stopping": {"enabled": True, "patience": 6}})
    result = cli("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "latest"


def hit_rate(run: Path, data: Path, boxes: dict, tmp_path: Path, margin: int = 0) -> tuple[float, float]:
    """The share of validation images whose Grad-CAM peak falls inside their box, and the validation accuracy."""
    from imgcls.infer.explain import explain_files

    with open(run / "split.csv", newline="", encoding="utf-8") as f:
        val = [row["path"] for row in csv.DictReader(f) if row["subset"] == "val"]
    results = explain_files(run, [data / path for path in val], tmp_path / "explain")
    hits, right = 0, 0
    for path, result in zip(val, results):
        x0, y0, x1, y1 = boxes[path]
        peak = result["peak"]
        hits += x0 - margin <= peak["x"] <= x1 + margin and y0 - margin <= peak["y"] <= y1 + margin
        right += result["label"] == path.split("/")[0]
    return hits / len(val), right / len(val)


@pytest.mark.slow
def test_grad_cam_peaks_inside_the_object_that_decides_the_class(cli, tmp_path):
    data = tmp_path / "shapes"
    boxes = make_shapes(data)
    run = train_small_cnn(cli, tmp_path, data)
    rate, accuracy = hit_rate(run, data, boxes, tmp_path)
    print(f"shapes: Grad-CAM peak inside the 12x12 object on {rate:.1%} of validation images (accuracy {accuracy:.1%})")
    assert accuracy >= 0.9
    assert rate >= 0.8  # a model that looked anywhere would hit about the box's share of the image, 3.5%


@pytest.mark.slow
def test_grad_cam_shows_a_shortcut_a_corner_mark(cli, tmp_path):
    data = tmp_path / "marked"
    boxes = make_marked(data)
    run = train_small_cnn(cli, tmp_path, data)
    # One cell of the last feature map (16x16 for 64 px) around the mark: the heatmap's own resolution.
    rate, accuracy = hit_rate(run, data, boxes, tmp_path, margin=SIZE // 16)
    print(f"corner marks: Grad-CAM peak on the 8x8 mark on {rate:.1%} of validation images (accuracy {accuracy:.1%})")
    assert accuracy >= 0.9
    assert rate >= 0.8


# --------------------------------------------------------------------------- every model, the command


def test_grad_cam_works_for_every_registered_model_at_every_precision():
    import keras

    from imgcls.config import load_config
    from imgcls.infer.explain import GradCam
    from imgcls.models import MODELS, build_model, inference_model

    batch = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    for name in sorted(MODELS):
        options = {"weights": "none"} if name == "backbone" else {}
        config = load_config(raw={"data": {"dir": ".", "image_size": [64, 64]}, "model": {"name": name, **options}})
        for policy in ("float32", "mixed_bfloat16"):
            keras.mixed_precision.set_global_policy(policy)
            try:
                model = inference_model(build_model(config, 3))
            finally:
                keras.mixed_precision.set_global_policy("float32")
            probs, maps = GradCam(model)(batch)
            assert probs.shape == (2, 3) and maps.shape == (2, 64, 64), name
            assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1, name


def test_a_model_without_a_convolution_is_one_line(cli, tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "flat.keras")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert_user_error(cli("explain", tmp_path / "x.png", "--model", tmp_path / "flat.keras", "--out", tmp_path / "o"),
                      "no convolutional layer")


def test_explain_writes_one_png_per_image_and_json_for_scripts(cli, trained_run, tiny_data, tmp_path):
    result = cli("explain", tiny_data / "red", "--run", trained_run, "--out", tmp_path / "cams", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 12 and len(list((tmp_path / "cams").glob("*_cam.png"))) == 12
    row = rows[0]
    assert set(row) >= {"path", "label", "confidence", "top_k", "explained", "peak", "mass_grid", "mass_border", "png"}
    assert 0 <= row["peak"]["x"] < 32 and abs(sum(map(sum, row["mass_grid"])) - 1) < 0.01


def test_explain_refuses_an_unknown_class_and_a_tflite_model(cli, trained_run, tiny_data, tmp_path):
    image = sorted((tiny_data / "red").iterdir())[0]
    assert_user_error(cli("explain", image, "--run", trained_run, "--class", "purple", "--out", tmp_path),
                      "--class purple: not a class of the model", "blue, green, red")
    refused = cli("explain", image, "--run", trained_run, "--layer", "nope", "--out", tmp_path)
    assert_user_error(refused, "--layer nope: not a feature map of", "its feature maps are")
    first_map = refused.stderr.split("its feature maps are ")[1].split(",")[0].strip()  # Keras numbers layer names
    chosen = cli("explain", image, "--run", trained_run, "--class", "blue", "--layer", first_map, "--json", "--out", tmp_path)
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.stdout)[0]["explained"] == "blue"
    export = cli("export", trained_run, "--format", "tflite", "--out", tmp_path / "lite")
    assert export.exit_code == 0, export.output
    assert_user_error(cli("explain", image, "--model", tmp_path / "lite", "--out", tmp_path / "o"),
                      "a tflite model has no gradients", "--model best.keras")


# --------------------------------------------------------------------------- the architecture figure


def test_the_architecture_figure_groups_vgg16_into_its_stages():
    from imgcls.config import load_config
    from imgcls.models import build_model
    from imgcls.models.architecture import model_stages

    config = load_config(raw={"data": {"dir": ".", "image_size": [224, 224]}, "model": {"name": "vgg16"}})
    stages = model_stages(build_model(config, 4))
    assert [s.shape_text for s in stages] == ["224x224x3", "112x112x64", "56x56x128", "28x28x256", "14x14x512",
                                              "7x7x512", "25088", "4096", "4096", "4"]
    assert stages[1].label == "Conv 3x3 x2\nMaxPool" and stages[3].label == "Conv 3x3 x3\nMaxPool"
    assert sum(s.params for s in stages) == 134_276_932  # every parameter is in one block


@pytest.mark.parametrize("extension", ["png", "svg", "pdf"])
def test_summary_draws_every_registered_model_from_the_config_alone(cli, tmp_path, extension):
    from imgcls.models import MODELS

    for name in sorted(MODELS):
        options = {"weights": "none"} if name == "backbone" else {}
        config = write_config(tmp_path / f"{name}.yaml", tmp_path / "no-data", data={"image_size": [64, 64]},
                              model={"name": name, **options})
        if name != "simple_cnn":  # its options in write_config are simple_cnn's
            text = config.read_text().replace("  dense:\n  - 16\n", "").replace("  filters:\n  - 8\n  - 16\n", "")
            config.write_text(text)
        figure = tmp_path / f"{name}.{extension}"
        result = cli("summary", config, "--num-classes", 3, "--diagram", figure, "--json")
        assert result.exit_code == 0, (name, result.output)
        assert figure.stat().st_size > 1000, name
        if extension != "png":
            break  # the formats once; every model in PNG


def test_a_diagram_file_of_another_kind_is_one_line(cli, tiny_config, tmp_path):
    assert_user_error(cli("summary", tiny_config, "--diagram", tmp_path / "model.jpg"), "--diagram", ".png, .svg or .pdf")


def test_every_run_has_its_architecture_figure(trained_run):
    assert (trained_run / "model.png").stat().st_size > 1000


def test_a_map_without_evidence_is_marked_empty_not_a_border_look():
    from imgcls.infer.explain import focus

    assert focus(np.zeros((8, 8))).to_dict() == {"empty": True, "peak": None, "mass_grid": None, "mass_centre": None,
                                                 "mass_border": None}
    centre = np.zeros((9, 9))
    centre[4, 4] = 1
    assert focus(centre).to_dict()["mass_centre"] == 1.0 and focus(centre).peak == (4, 4)


def test_a_resnet_draws_one_block_per_stage():
    from imgcls.config import load_config
    from imgcls.models import build_model
    from imgcls.models.architecture import model_stages

    config = load_config(raw={"data": {"dir": ".", "image_size": [64, 64]}, "model": {"name": "resnet_small"}})
    stages = [s for s in model_stages(build_model(config, 3)) if s.kind == "conv"]
    assert len(stages) >= 3 and all(len(s.label.splitlines()) <= 3 for s in stages)
    assert any(s.label.startswith("Residual x") for s in stages)
