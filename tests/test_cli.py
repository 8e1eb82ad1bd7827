"""End to end: every command on tiny generated images, and every user error as one line with exit code 2."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (MESSY_BAD, assert_user_error, make_image_folder, make_messy_folder, run_cli,
                      training_process_after_its_first_epoch, write_config)

from imgcls import files
from imgcls.run import layout

RUN_FILES = ["config.yaml", "classes.json", "split.csv", "best.keras", "history.csv", "history.png", "metrics.json"]


# --------------------------------------------------------------------------- train


def test_train_writes_a_complete_run_folder_and_points_latest_at_it(trained_run):
    for name in RUN_FILES:
        assert (trained_run / name).is_file(), name
    assert trained_run.name.startswith("tiny-")
    assert json.loads((trained_run / "classes.json").read_text()) == ["blue", "green", "red"]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 2
    assert metrics["best_epoch"] in (1, 2) and 0 <= metrics["best"]["val_accuracy"] <= 1
    assert metrics["train_images_per_s"] > 0 and metrics["wall_time_s"] > 0


def test_history_has_one_row_per_epoch_with_the_learning_rate(trained_run):
    rows = list(csv.DictReader(open(trained_run / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert column in rows[0]


def test_resolved_config_records_versions_and_can_be_trained_again(trained_run):
    from imgcls.config import load_config

    resolved = layout.read_config(trained_run)
    assert resolved["imgcls"]["tensorflow"] and resolved["imgcls"]["version"]
    assert resolved["model"]["filters"] == [8, 16] and resolved["model"]["kernel_size"] == 3
    assert load_config(trained_run / "config.yaml").model.name == "simple_cnn"


def test_split_file_lists_every_image_once(trained_run, tiny_data):
    rows = list(csv.DictReader(open(trained_run / "split.csv", encoding="utf-8")))
    assert len(rows) == 36 and len({r["path"] for r in rows}) == 36
    assert {r["subset"] for r in rows} == {"train", "val"}
    assert all((tiny_data / r["path"]).is_file() for r in rows)


def test_best_model_loads_with_keras_alone_and_outputs_probabilities(trained_run):
    model = keras.saving.load_model(trained_run / "best.keras")
    probs = model.predict(np.full((2, 32, 32, 3), 128, dtype="float32"), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_overrides_and_categorical_labels_with_a_schedule(cli, tmp_path, tiny_config):
    result = cli("train", tiny_config, "--runs-dir", tmp_path, "--set", "train.epochs=1",
                 "--set", "data.label_mode=categorical", "--set", "train.schedule={name: exponential_decay, decay_epochs: 1}")
    assert result.exit_code == 0, result.output
    run = (tmp_path / "latest").resolve()
    config = layout.read_config(run)
    assert config["train"]["epochs"] == 1 and config["data"]["label_mode"] == "categorical"
    assert config["imgcls"]["learning_rate_schedule"]["decay_steps"] == 4  # 27 images / batch 8
    assert len(layout.read_history(run)) == 1


@pytest.mark.slow
def test_binary_run_predicts_two_class_probabilities(cli, tmp_path):
    data = make_image_folder(tmp_path / "data", classes={"cat": (200, 50, 50), "dog": (50, 50, 200)}, per_class=8)
    config = write_config(tmp_path / "binary.yaml", data, data={"label_mode": "binary"}, train={"epochs": 1})
    assert cli("train", config, "--runs-dir", tmp_path / "runs").exit_code == 0
    result = cli("predict", data / "cat", "--runs-dir", tmp_path / "runs", "--json", "--top-k", "2")
    predictions = json.loads(result.stdout)
    assert len(predictions) == 8
    assert all(sum(t["confidence"] for t in p["top_k"]) == pytest.approx(1.0, abs=1e-5) for p in predictions)
    run = (tmp_path / "runs" / "latest").resolve()
    report, metrics = files.read_json(run / "eval.json"), files.read_json(run / "metrics.json")
    assert report["accuracy"] == pytest.approx(metrics["best"]["val_accuracy"], abs=1e-6)  # one sigmoid, two classes
    assert report["loss"] == pytest.approx(metrics["best"]["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_ctrl_c_during_the_evaluation_after_training_says_the_run_is_saved(cli, tmp_path, tiny_config, monkeypatch):
    from imgcls.infer import evaluate

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_after_training", interrupted)
    result = cli("train", tiny_config, "--runs-dir", tmp_path, "--set", "train.epochs=1")
    run = (tmp_path / "latest").resolve()
    assert result.exit_code == 130
    assert f"which is finished and saved; the plot and evaluation were not finished: imgcls plot {run}" in result.stderr
    assert f"imgcls evaluate {run}" in result.stderr
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished" and (run / "best.keras").is_file()


@pytest.mark.slow
def test_a_real_ctrl_c_mid_training_keeps_completed_epochs_and_exits_130(tmp_path, tiny_data):
    """SIGINT, as a terminal sends it, to a training process between its first epoch and its last."""
    config = write_config(tmp_path / "c.yaml", tiny_data, data={"batch_size": 1}, train={"epochs": 500})
    runs_dir = tmp_path / "runs"
    process = training_process_after_its_first_epoch(config, runs_dir)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted (Ctrl-C):" in stderr and "resume with: imgcls train --resume" in stderr
    run = (runs_dir / "latest").resolve()
    assert layout.read_config(run)["imgcls"]["command"] == f"imgcls train {config} --runs-dir {runs_dir}"  # to repeat it
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["stopped_by"] == "SIGINT" and 1 <= metrics["epochs_run"] < 500
    # Every backed-up epoch is in history.csv (one more row when SIGINT came between the two writes).
    assert 1 <= checkpoints_saved(run) <= len(layout.read_history(run)) == metrics["epochs_run"]
    assert (run / "best.keras").is_file() and (run / "history.png").is_file()
    assert not (run / "eval.json").exists()  # evaluation is skipped after Ctrl-C


def checkpoints_saved(run) -> int:
    """The epoch of the run's backup (what --resume continues after)."""
    from imgcls.training.checkpoints import backup_epoch

    return backup_epoch(run)


@pytest.mark.slow
def test_early_stopping_records_the_status(cli, tmp_path, tiny_config):
    result = cli("train", tiny_config, "--runs-dir", tmp_path, "--set", "train.epochs=6", "--set", "train.learning_rate=1e-9",
                 "--set", "callbacks.early_stopping={enabled: true, patience: 1, monitor: val_loss, min_delta: 1.0}")
    assert result.exit_code == 0, result.output
    metrics = json.loads(((tmp_path / "latest").resolve() / "metrics.json").read_text())
    assert metrics["status"] == "stopped_early" and metrics["epochs_run"] < 6


# --------------------------------------------------------------------------- predict


def test_predict_prints_one_line_per_image_with_label_and_confidence(cli, trained_run, tiny_data):
    result = cli("predict", tiny_data / "red" / "000.png", tiny_data / "blue", "--run", trained_run)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 13
    path, label, confidence = lines[0].split("\t")[:3]
    assert path.endswith("000.png") and label in ("red", "green", "blue") and 0 < float(confidence) <= 1


def test_predict_uses_runs_latest_by_default(cli, trained_run, tiny_data):
    runs_dir = trained_run.parent
    result = cli("predict", tiny_data / "red" / "001.png", "--runs-dir", runs_dir)
    assert result.exit_code == 0 and "001.png" in result.stdout


def test_predict_json_and_csv_with_top_k(cli, trained_run, tiny_data, tmp_path):
    out = tmp_path / "predictions.csv"
    result = cli("predict", tiny_data / "green", "--run", trained_run, "--json", "--top-k", "3", "--csv", out)
    predictions = json.loads(result.stdout)
    assert len(predictions) == 12
    first = predictions[0]
    assert set(first) == {"path", "label", "confidence", "top_k"}
    assert [t["label"] for t in first["top_k"]][0] == first["label"] and len(first["top_k"]) == 3
    assert sum(t["confidence"] for t in first["top_k"]) == pytest.approx(1.0, abs=1e-5)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and "label_3" in rows[0]


def test_predict_matches_the_model_on_the_same_pixels(trained_run, tiny_data):
    """predict and training share load_image: same pixels, same probabilities."""
    from imgcls.data.pipeline import load_image
    from imgcls.infer.predict import predict_files

    path = tiny_data / "red" / "003.png"
    [prediction] = predict_files(trained_run, [path], top_k=3)
    model = keras.saving.load_model(trained_run / "best.keras")
    pixels = load_image(str(path), (32, 32), 3).numpy().astype("float32")[None]
    probs = model.predict(pixels, verbose=0)[0]
    classes = layout.read_classes(trained_run)
    assert prediction.label == classes[int(np.argmax(probs))]
    assert prediction.confidence == pytest.approx(float(probs.max()), abs=1e-5)


def test_predict_reads_webp_and_exif_rotated_photos_as_training_does(trained_run, tmp_path):
    """A phone photo stored sideways with an EXIF rotation, as WebP, predicts like the upright original."""
    from PIL import Image

    from imgcls.infer.predict import predict_files

    rng = np.random.default_rng(3)
    upright = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    upright[:16, :, 0] = 255  # red-ish top half: the model must not see it on its side
    Image.fromarray(upright).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.rot90(upright).copy()).save(tmp_path / "sideways.webp", lossless=True, exif=exif.tobytes())
    png, webp = predict_files(trained_run, [tmp_path / "upright.png", tmp_path / "sideways.webp"], top_k=3)
    assert [t["label"] for t in webp.top_k] == [t["label"] for t in png.top_k]
    for a, b in zip(webp.top_k, png.top_k):
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)


def test_predict_on_a_folder_skips_bad_files_with_a_warning(cli, trained_run, tmp_path):
    folder = make_image_folder(tmp_path / "photos", per_class=1)
    (folder / "red" / "broken.jpg").write_bytes(b"")
    (folder / "red" / "notes.txt").write_text("ignored")
    result = cli("predict", folder, "--run", trained_run)
    assert result.exit_code == 0
    assert len(result.stdout.strip().splitlines()) == 3
    assert "skipped" in result.stderr and "broken.jpg: empty file" in result.stderr


# --------------------------------------------------------------------------- a messy folder, end to end


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory):
    """One epoch over make_messy_folder, with copies of one photo and a held-out test split."""
    root = tmp_path_factory.mktemp("messy")
    data = make_messy_folder(root / "photos")
    original = data / "blue" / "00.jpg"
    for i in range(1, 4):
        (data / "blue" / f"00 ({i}).jpg").write_bytes(original.read_bytes())
    config = write_config(root / "messy.yaml", data, data={"allow_empty_classes": True, "test_split": 0.2},
                          train={"epochs": 1, "class_weight": "balanced"})
    result = run_cli("train", config, "--runs-dir", root / "runs")
    return result, (root / "runs" / "latest").resolve(), data


def test_train_over_a_messy_folder_finishes_and_reports_exactly_the_skipped_files(messy_run):
    result, run, _ = messy_run
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"
    lines = (run / "skipped_files.txt").read_text(encoding="utf-8").splitlines()
    skipped = dict(line.split("\t") for line in lines)
    assert set(skipped) == set(MESSY_BAD)
    for path, reason in skipped.items():
        assert MESSY_BAD[path] in reason
        assert path in result.stderr  # named on the console too
    assert "dropped class empty" in result.stderr and "class weights" in result.stderr


def test_split_csv_has_train_val_and_test_and_no_copy_crosses_subsets(messy_run):
    import hashlib

    _, run, data = messy_run
    rows = list(csv.DictReader(open(run / "split.csv", encoding="utf-8")))
    assert {r["subset"] for r in rows} == {"train", "val", "test"}
    assert not {r["path"] for r in rows} & set(MESSY_BAD)
    subsets_of = {}
    for r in rows:
        digest = hashlib.sha1((data / r["path"]).read_bytes()).hexdigest()
        subsets_of.setdefault(digest, set()).add(r["subset"])
    assert all(len(subsets) == 1 for subsets in subsets_of.values())
    duplicates = list(csv.DictReader(open(run / "duplicates.csv", encoding="utf-8")))
    assert duplicates and all(d["same_as"].startswith("blue/00") and d["dropped"] == "True" for d in duplicates)


def test_class_names_with_spaces_and_accents_work_in_every_artifact(cli, messy_run, tmp_path):
    _, run, data = messy_run
    assert '"Café"' in (run / "classes.json").read_text(encoding="utf-8")
    assert "Jennifer Lawrence/00.jpg,Jennifer Lawrence," in (run / "split.csv").read_text(encoding="utf-8")
    assert (run / "history.png").is_file()
    result = cli("predict", data / "Café" / "01.jpg", data / "blue" / "photo.webp", "--run", run, "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    assert "Café" in result.stdout  # not escaped to \u00e9
    predictions = json.loads(result.stdout)
    assert {t["label"] for t in predictions[0]["top_k"]} == {"Café", "Jennifer Lawrence", "blue"}


# --------------------------------------------------------------------------- plot, summary, config, models


def test_plot_writes_a_png_into_the_run(cli, trained_run):
    (trained_run / "history.png").unlink()
    result = cli("plot", trained_run)
    assert result.exit_code == 0
    assert Path(result.stdout.strip()) == trained_run / "history.png"
    assert (trained_run / "history.png").stat().st_size > 10_000


def test_plot_overlays_several_runs(cli, trained_run, tmp_path):
    out = tmp_path / "compare.png"
    assert cli("plot", trained_run, trained_run, "--out", out).exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_several_runs_keeps_each_runs_own_curves(cli, trained_run, tmp_path):
    other = shutil.copytree(trained_run, tmp_path / "other-run", symlinks=True)
    own_curves = (trained_run / "history.png").read_bytes()
    result = cli("plot", trained_run, other)
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()) == trained_run / "compare-with-other-run.png"
    assert (trained_run / "history.png").read_bytes() == own_curves


def test_summary_counts_parameters_without_data(cli, tmp_path):
    config = tmp_path / "celebs.yaml"
    config.write_text("data: {dir: absent, image_size: [224, 224]}\nmodel: {name: celebs_cnn}\n")
    result = cli("summary", config, "--num-classes", "17", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"model": "celebs_cnn", "num_classes": 17,
                                         "total_params": 9_536_945, "trainable_params": 9_536_945}


def test_summary_takes_classes_from_the_data_folder_and_prints_the_layers(cli, tiny_config):
    result = cli("summary", tiny_config)
    assert result.exit_code == 0
    assert "3 classes" in result.stdout and "conv2d" in result.stdout.lower()


def test_summary_without_data_or_num_classes_says_what_to_pass(cli, tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "absent")
    result = cli("summary", config)
    assert result.exit_code == 2 and "--num-classes" in result.stderr


def test_config_defaults_prints_the_reference(cli):
    result = cli("config", "--defaults")
    assert result.exit_code == 0 and "validation_split: 0.2" in result.stdout


def test_config_validates_and_prints_the_resolved_config(cli, tiny_config):
    result = cli("config", tiny_config, "--set", "train.epochs=7")
    assert result.exit_code == 0 and "epochs: 7" in result.stdout


def test_models_lists_the_registry(cli):
    result = cli("models")
    for name in ("simple_cnn", "celebs_cnn", "monkeypox_cnn", "vgg16", "cnn_bn", "resnet_small"):
        assert name in result.stdout


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name, exists, problem", [("photo[red].png", True, "not an image"),
                                                   ("nothere[/].png", False, "no such file or folder")])
def test_error_names_a_file_with_brackets_as_it_is(cli, tmp_path, trained_run, name, exists, problem):
    """Rich would read "[red]" as a style and "[/]" as a closing tag: messages print text, not markup."""
    if exists:
        (tmp_path / name).write_text("not an image")
    assert_user_error(cli("predict", tmp_path / name, "--run", trained_run), f"{tmp_path / name}: {problem}")


def test_error_missing_config_file(cli, tmp_path):
    assert_user_error(cli("train", tmp_path / "missing.yaml"), "config file not found", "missing.yaml")


def test_error_malformed_yaml(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {dir: [unclosed\n")
    assert_user_error(cli("train", bad), "bad.yaml", "malformed YAML")


def test_error_unknown_key_in_the_config(cli, tiny_config):
    assert_user_error(cli("train", tiny_config, "--set", "train.epoch=3"), "did you mean train.epochs?")


def test_error_missing_data_folder_makes_no_run(cli, tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "absent")
    assert_user_error(cli("train", config, "--runs-dir", tmp_path / "runs"), "data folder not found", "absent")
    assert not (tmp_path / "runs").exists()


def test_error_data_folder_with_one_class(cli, tmp_path):
    data = make_image_folder(tmp_path / "d", classes={"solo": (1, 2, 3)}, per_class=2)
    assert_user_error(cli("train", write_config(tmp_path / "c.yaml", data)), "only one class folder (solo)")


def test_error_before_training_leaves_no_empty_run_behind(cli, tmp_path, tiny_config):
    runs_dir = tmp_path / "runs"
    result = cli("train", tiny_config, "--runs-dir", runs_dir, "--set", "data.label_mode=binary")
    assert_user_error(result, "binary needs exactly 2 classes")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_run_files_are_readable_by_others_like_best_keras(trained_run):
    assert (trained_run / "metrics.json").stat().st_mode & 0o044 == (trained_run / "best.keras").stat().st_mode & 0o044


def test_a_config_with_a_separate_validation_folder_round_trips(cli, tmp_path):
    from imgcls.config import load_config

    make_image_folder(tmp_path / "train", per_class=2)
    make_image_folder(tmp_path / "val", per_class=1)
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dir: {tmp_path / 'train'}, val_dir: {tmp_path / 'val'}}}\n")
    printed = cli("config", config)
    assert printed.exit_code == 0, printed.output
    (tmp_path / "resolved.yaml").write_text(printed.stdout)
    assert load_config(tmp_path / "resolved.yaml").data.validation_split is None


def test_error_missing_validation_folder_names_its_key(cli, tmp_path, tiny_data):
    config = write_config(tmp_path / "c.yaml", tiny_data, data={"val_dir": str(tmp_path / "nope"), "validation_split": None})
    assert_user_error(cli("train", config), "set data.val_dir")


def test_error_class_without_images(cli, tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    (data / "empty").mkdir()
    assert_user_error(cli("train", write_config(tmp_path / "c.yaml", data)), "empty: no usable images in this class folder",
                      "data.allow_empty_classes")


def test_error_predict_with_no_runs_yet(cli, tmp_path, tiny_data):
    assert_user_error(cli("predict", tiny_data / "red", "--runs-dir", tmp_path / "none"), "no runs yet", "imgcls train")


def test_error_predict_on_a_file_that_is_not_an_image(cli, trained_run, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fake = tmp_path / "fake.jpg"
    fake.write_text("not really a jpeg")
    assert_user_error(cli("predict", text, "--run", trained_run), "notes.txt: not an image file")
    assert_user_error(cli("predict", fake, "--run", trained_run), "fake.jpg: not an image")
    assert_user_error(cli("predict", tmp_path / "ghost.png", "--run", trained_run), "ghost.png: no such file")


def test_error_plot_of_a_folder_that_is_not_a_run(cli, tmp_path):
    assert_user_error(cli("plot", tmp_path), "is not an imgcls run folder")


def test_error_run_name_cannot_escape_the_runs_folder(cli, tiny_config, tmp_path):
    assert_user_error(cli("train", tiny_config, "--runs-dir", tmp_path, "--name", "../escape"), "run name")


# --------------------------------------------------------------------------- start-up


def test_help_config_and_argument_errors_do_not_import_tensorflow(tiny_config):
    """Importing TensorFlow takes seconds: only commands that compute may pay for it."""
    invocations = [["--help"], ["config", "--defaults"], ["models"], ["train", "--help"], ["predict"],
                   ["train", "missing.yaml"], ["train", str(tiny_config), "--set", "train.epoch=3"],
                   ["summary", str(tiny_config), "--set", "model.name=nope"]]
    code = ("import sys; from typer.testing import CliRunner; from imgcls.cli import app; r = CliRunner();"
            f"codes = [r.invoke(app, args).exit_code for args in {invocations!r}];"
            "print(codes, 'tensorflow' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert output == "[0, 0, 0, 0, 2, 2, 2, 2] False"


def test_predict_sends_images_through_the_model_in_batches(trained_run, tiny_data):
    from imgcls.infer import predict
    from imgcls.infer.classifier import Classifier

    calls = []
    classifier = Classifier.from_run(trained_run)
    real_predict = classifier.predict_batch
    classifier.predict_batch = lambda batch: calls.append(len(batch)) or real_predict(batch)
    files = sorted(tiny_data.rglob("*.png"))
    assert len(predict.predict_files(classifier, files)) == 36
    assert calls == [32, 4]  # one model call per batch of 32, not one per image


def test_python_dash_m_imgcls_works():
    result = subprocess.run([sys.executable, "-m", "imgcls", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`imgcls predict DIR | head`: when the reader stops, no error line and no traceback."""
    code = ("import sys; from imgcls.cli import user_errors\n"
            "def command(): raise BrokenPipeError(32, 'Broken pipe')\n"
            "try: user_errors(command)()\n"
            "except BaseException as exc: print(type(exc).__name__, getattr(exc, 'exit_code', None), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.strip() == "Exit 141"
