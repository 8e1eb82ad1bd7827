"""--tta: predict and evaluate average each image with its mirror images, the flips the run trained with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_user_error
from PIL import Image

from imgcls.errors import ImgclsError
from imgcls.infer.classifier import Classifier
from imgcls.infer.predict import FLIP_AXES, class_probabilities, tta_flips


def _left_bright(tmp_path: Path) -> str:
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:, :4] = 255
    path = tmp_path / "left.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def _side_classifier() -> Classifier:
    """Class 0 when the left half is the brighter one, class 1 otherwise: a mirror image swaps them."""

    def predict_batch(images: np.ndarray) -> np.ndarray:
        left = images[:, :, :4].mean(axis=(1, 2, 3)) > images[:, :, 4:].mean(axis=(1, 2, 3))
        return np.stack([left, ~left], axis=1).astype(np.float32)

    return Classifier(["left", "right"], (8, 8), 3, predict_batch, "keras", Path("side.keras"))


def test_tta_averages_an_image_with_its_mirror_image(tmp_path):
    image = _left_bright(tmp_path)
    assert class_probabilities(_side_classifier(), [image]).tolist() == [[1.0, 0.0]]
    assert class_probabilities(_side_classifier(), [image], flips=FLIP_AXES["horizontal"]).tolist() == [[0.5, 0.5]]
    assert class_probabilities(_side_classifier(), [image], flips=FLIP_AXES["vertical"]).tolist() == [[1.0, 0.0]]


def _run_trained_with(tmp_path: Path, flip: str, augment: str = "light") -> Path:
    run = tmp_path / f"{flip}-{augment}"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dir": "x", "augment": augment, "augment_flip": flip}}))
    return run


@pytest.mark.parametrize("flip, axes", [("horizontal", (2,)), ("vertical", (1,)), ("horizontal_and_vertical", (2, 1))])
def test_tta_uses_the_flips_the_run_trained_with(tmp_path, flip, axes):
    assert tta_flips(_run_trained_with(tmp_path, flip)) == axes


def test_tta_is_refused_for_a_run_whose_mirror_images_are_other_classes(tmp_path):
    with pytest.raises(ImgclsError, match=r"trained with data.augment_flip: none .*leave out --tta"):
        tta_flips(_run_trained_with(tmp_path, "none"))


def test_tta_is_refused_for_a_run_that_never_saw_a_mirror_image(tmp_path):
    """augment_flip defaults to horizontal, but without augmentation (the digits demo) no flip was ever trained."""
    with pytest.raises(ImgclsError, match=r"trained without any \(data.augment: none\).*leave out --tta"):
        tta_flips(_run_trained_with(tmp_path, "horizontal", augment="none"))


def _copy_trained_with(trained_run: Path, tmp_path: Path, **data) -> Path:
    """The shared trained run, copied, its config saying it trained with these data settings."""
    import shutil

    run = shutil.copytree(trained_run, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"].update(data)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_evaluate_with_tta_writes_its_own_files_beside_the_plain_evaluation(cli, trained_run, tmp_path):
    run, out = _copy_trained_with(trained_run, tmp_path, augment="light"), tmp_path / "eval"
    plain = cli("evaluate", run, "--out", out, "--json")
    tta = cli("evaluate", run, "--out", out, "--json", "--tta")
    assert plain.exit_code == 0 and tta.exit_code == 0, tta.output
    assert json.loads(tta.stdout)["tta"] == ["horizontal flip"] and json.loads(plain.stdout)["tta"] == []
    assert (out / "eval.json").is_file() and (out / "eval_tta.json").is_file() and (out / "confusion_matrix_tta.png").is_file()


def test_predict_with_tta_gives_every_image_a_label(cli, trained_run, tiny_data, tmp_path):
    run = _copy_trained_with(trained_run, tmp_path, augment="light")
    result = cli("predict", tiny_data, "--run", run, "--tta", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 36 and all(0 <= row["confidence"] <= 1 for row in rows)


def test_predict_with_tta_on_a_run_trained_without_flips_is_one_line(cli, trained_run, tiny_data, tmp_path):
    run = _copy_trained_with(trained_run, tmp_path, augment="light", augment_flip="none")
    assert_user_error(cli("predict", tiny_data, "--run", run, "--tta"), "leave out --tta")
    assert_user_error(cli("predict", tiny_data, "--run", trained_run, "--tta"), "data.augment: none", "leave out --tta")
