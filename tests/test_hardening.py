"""Hardened against the real world: the classes of bad input an outside test tried, each a named skip or one line.

    - any file-system object in a data folder (pipes, devices, huge files, links, names that are not UTF-8)
    - any run-folder file damaged or missing
    - any output path a user can give
    - any value a config key can take
    - numerical failure during training
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, make_image_folder, read_only, training_process_after_its_first_epoch, write_config
from PIL import Image

from imgcls import files
from imgcls.data.folders import scan_folder
from imgcls.errors import ImgclsError
from imgcls.run import layout


def reasons(scan) -> dict[str, str]:
    return dict(scan.bad)


# --------------------------------------------------------------------------- any file-system object in a data folder


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
@pytest.mark.parametrize("channels", [1, 3], ids=["grayscale", "rgb"])
def test_every_format_the_scan_accepts_decodes_in_every_color_mode(tmp_path, fmt, channels):
    from imgcls.data.pipeline import load_image

    grey = (np.arange(16 * 16).reshape(16, 16) % 251).astype(np.uint8)
    for name, image in (("grey", Image.fromarray(grey)), ("rgb", Image.fromarray(np.stack([grey] * 3, -1)))):
        path = tmp_path / f"{name}.{fmt.lower()}"
        image.save(path, format=fmt)
        pixels = load_image(str(path), (16, 16), channels).numpy()
        assert pixels.shape == (16, 16, channels)
        np.testing.assert_array_equal(pixels[..., 0], grey)


def test_a_named_pipe_in_a_class_folder_is_a_named_skip_not_a_hang(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    os.mkfifo(data / "red" / "pipe.png")
    os.mkfifo(data / "red" / "notes")  # not an image name: ignored
    code = f"from imgcls.data.folders import scan_folder; s = scan_folder({str(data)!r}); print(dict(s.bad), s.ignored)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)  # never blocks
    assert result.returncode == 0, result.stderr
    assert "'red/pipe.png': 'not a regular file (a named pipe)'" in result.stdout and result.stdout.strip().endswith(" 1")


def test_huge_files_devices_and_links_are_named_skips_never_read_whole(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    with open(data / "red" / "huge.jpg", "wb") as f:  # sparse: 600 MiB on paper, nothing on disk
        f.truncate(600 * 2**20)
    with open(data / "red" / "holiday.mp4", "wb") as f:
        f.truncate(2 * 2**30)
    (data / "red" / "zero.jpg").symlink_to("/dev/zero")
    (data / "red" / "gone.jpg").symlink_to(data / "red" / "nothing-here.jpg")
    (data / "red" / "loop.jpg").symlink_to(data / "red" / "loop.jpg")
    (data / "green" / "good link.png").symlink_to(data / "green" / "000.png")
    scan = scan_folder(data)
    bad = reasons(scan)
    assert bad["red/huge.jpg"].startswith("too large (600 MiB; the limit is 512 MiB")
    assert bad["red/zero.jpg"] == "not a regular file (a character device)"
    assert bad["red/gone.jpg"].startswith("unreadable (") and bad["red/loop.jpg"].startswith("unreadable (")
    assert "red/holiday.mp4" not in bad and scan.ignored == 1  # not an image name, not opened
    assert any(f.endswith("good link.png") for f in scan.files)


def test_a_name_that_is_not_utf8_is_named_not_a_crash(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    bad_name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes, as an old camera or zip file writes them
    shutil.copy(data / "red" / "000.png", data / "red" / bad_name)
    scan = scan_folder(data)
    assert reasons(scan)[f"red/{bad_name}"] == "the file name is not valid UTF-8: rename it"
    (data / os.fsdecode(b"cl\xe4sse")).mkdir()
    with pytest.raises(ImgclsError, match=r"class folder name 'cl\\\\xe4sse' is not valid UTF-8; rename it"):
        scan_folder(data)


def test_imgcls_own_runs_folder_inside_the_data_folder_is_never_a_class(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=2)
    run = layout.create_run(data / "runs", "tiny")  # --runs-dir inside the data folder
    (run / "history.png").write_bytes((data / "red" / "000.png").read_bytes())
    layout.release_run(run)
    old_style = data / "old-runs"  # made before the marker: a `latest` pointer tells
    old_style.mkdir()
    (old_style / "latest").symlink_to("nowhere")
    assert scan_folder(data).class_names == ["blue", "green", "red"]


def test_every_class_with_a_single_image_says_why_not_raise_validation_split(tmp_path):
    from imgcls.config import load_config
    from imgcls.data.plan import plan_data

    data = make_image_folder(tmp_path / "d", classes={f"c{i}": (i, i, i) for i in range(20)}, per_class=1)
    with pytest.raises(ImgclsError, match="every class has a single image, which leaves none to validate on"):
        plan_data(load_config(raw={"data": {"dir": str(data)}}))


def test_a_data_folder_split_into_train_and_valid_is_used_as_its_subsets(cli, tmp_path):
    root = tmp_path / "dataset"
    for i, split in enumerate(("train", "valid")):
        make_image_folder(root / split, per_class=3, seed=i)
    result = cli("inspect", root, "--out", tmp_path / "grid.png")
    assert result.exit_code == 0, result.output
    assert "split into train/ (train) + valid/ (val)" in result.stdout
    facts = json.loads(cli("inspect", root, "--out", tmp_path / "grid.png", "--json").stdout)
    assert facts["classes"] == ["blue", "green", "red"]  # not a "train vs valid" classifier
    assert facts["images"] == {"train": 9, "val": 9}


def test_class_folders_that_all_hold_the_same_folders_are_warned_about(cli, tmp_path):
    root = tmp_path / "dataset"
    for i, part in enumerate(("day", "night")):
        make_image_folder(root / part, per_class=3, seed=i)  # classes under day/ and night/: one level too high
    result = cli("inspect", root, "--out", tmp_path / "grid.png")
    assert result.exit_code == 0, result.output
    assert "holds the same folders (blue, green, red): data.dir looks one level too high" in result.stdout


def test_class_folders_split_into_train_and_test_say_to_swap_the_levels(cli, tmp_path):
    for j, name in enumerate(("cats", "dogs")):
        for i, part in enumerate(("train", "test")):
            make_image_folder(tmp_path / "d" / name / part, classes={"x": (9, 9, 9)}, per_class=2, seed=10 * j + i)
    result = cli("inspect", tmp_path / "d", "--out", tmp_path / "grid.png")
    assert "the images are sorted <class>/<subset>/; imgcls reads <subset>/<class>/" in result.stdout


@pytest.mark.slow
def test_a_data_file_that_vanishes_during_training_stops_it_with_one_line(tmp_path, tiny_data):
    data = shutil.copytree(tiny_data, tmp_path / "data")
    victim = sorted((data / "red").iterdir())[0]
    config = write_config(tmp_path / "c.yaml", data, train={"epochs": 3}, data={"cache": "none"})

    import keras

    class DeleteAfterEpoch1(keras.callbacks.Callback):  # after the scan: its cache says nothing about this
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                victim.unlink()

    from imgcls.launch import launch_training

    with pytest.raises(ImgclsError, match=r"a data file could not be read during training .*red/0\d\d\.png.*resume with"):
        launch_training(config, runs_dir=tmp_path / "runs", callbacks=[DeleteAfterEpoch1()], log=lambda *a, **k: None)
    run = (tmp_path / "runs" / "latest").resolve()
    assert files.read_json(run / "metrics.json")["status"] == "failed" and (run / "backup").is_dir()


def test_an_image_that_vanished_after_its_check_is_one_line_in_predict(trained_run, tmp_path, tiny_data):
    from imgcls.infer.classifier import Classifier
    from imgcls.infer.predict import class_probabilities

    with pytest.raises(ImgclsError, match=r"an image could not be read .*gone\.png"):
        class_probabilities(Classifier.from_run(trained_run), [str(tmp_path / "gone.png")])


def test_predict_refuses_a_pipe_given_by_name(cli, trained_run, tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    assert_user_error(cli("predict", tmp_path / "pipe.jpg", "--run", trained_run), "not a regular file")


# --------------------------------------------------------------------------- any run-folder file damaged or missing


def damaged_copy(trained_run: Path, tmp_path: Path, name: str, content: bytes | None) -> Path:
    run = shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    if content is None:
        (run / name).unlink()
    else:
        (run / name).write_bytes(content)
    return run


DAMAGE = [
    # predict needs no config.yaml: the model holds its preprocessing
    ("config.yaml", b"data: [\n", ["evaluate", "export", "resume"]),
    ("config.yaml", b"\xff\xfe not text", ["evaluate", "resume"]),
    ("classes.json", b"[\"blue\", \"green\"", ["predict", "evaluate", "export"]),
    ("classes.json", b"[\"blue\", \"green\"]", ["predict", "export"]),  # two names for a three-class model
    ("metrics.json", b"{not json", ["evaluate", "plot"]),
    ("history.csv", b"epoch,accuracy\nfoo,bar\n", ["plot"]),
    ("split.csv", b"path\n\"unterminated\n", ["evaluate", "export"]),
    ("best.keras", b"PK\x03\x04 half a zip", ["predict", "evaluate", "export"]),
]
COMMANDS = {
    "predict": lambda run, data: ["predict", data / "red" / "000.png", "--run", run],
    "evaluate": lambda run, data: ["evaluate", run],
    "export": lambda run, data: ["export", run, "--format", "keras"],
    "plot": lambda run, data: ["plot", run],
    "resume": lambda run, data: ["train", "--resume", run],
}


@pytest.mark.parametrize("name, content, commands", DAMAGE,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DAMAGE)])
def test_a_damaged_run_file_is_one_line_that_names_it(cli, trained_run, tiny_data, tmp_path, name, content, commands):
    run = damaged_copy(trained_run, tmp_path, name, content)
    if name == "metrics.json":
        (run / "history.csv").unlink()  # so the readers must turn to metrics.json
    for command in commands:
        result = cli(*COMMANDS[command](run, tiny_data))
        assert_user_error(result)
        assert name in result.stderr or str(run) in result.stderr, (command, result.stderr)


def test_imgcls_runs_marks_a_damaged_run_unreadable_and_lists_the_others(cli, trained_run, tmp_path):
    good = shutil.copytree(trained_run, tmp_path / "runs" / "good-20260101-000000")
    bad = shutil.copytree(trained_run, tmp_path / "runs" / "bad-20260102-000000")
    (bad / "config.yaml").write_text("data: [\n")
    listed = json.loads(cli("runs", "--runs-dir", tmp_path / "runs", "--json").stdout)
    assert {r["name"]: r["status"] for r in listed} == {good.name: "finished", bad.name: "unreadable"}
    assert "config.yaml: damaged" in next(r["problem"] for r in listed if r["name"] == bad.name)
    table = cli("runs", "--runs-dir", tmp_path / "runs")
    assert table.exit_code == 0 and "unreadable" in table.stdout


def test_a_latest_that_points_nowhere_names_the_runs_there_are(cli, trained_run, tmp_path):
    runs_dir = tmp_path / "runs"
    shutil.copytree(trained_run, runs_dir / trained_run.name)
    (runs_dir / "latest").symlink_to("deleted-run")
    assert_user_error(cli("evaluate", "--runs-dir", runs_dir), "points to a run that is gone", trained_run.name)


def test_resume_given_a_config_file_says_it_wants_a_run_folder(cli, tiny_config):
    result = cli("train", tiny_config, "--resume")
    assert_user_error(result, "is a file, not a run folder", "without --resume")
    assert "data:" not in result.stderr  # the file's content is not printed as a path


def test_labels_that_do_not_match_the_models_outputs_are_refused(cli, trained_run, tmp_path, tiny_data):
    export = tmp_path / "export"
    assert cli("export", trained_run, "--format", "keras", "--out", export).exit_code == 0
    for names in (["a", "b"], [f"c{i}" for i in range(12)]):
        (export / "labels.txt").write_text("\n".join(names) + "\n")
        assert_user_error(cli("predict", tiny_data / "red" / "000.png", "--model", export),
                          "the model has 3 outputs", f"list {len(names)} classes")


def test_an_export_folder_is_a_model(cli, trained_run, tmp_path, tiny_data):
    export = tmp_path / "exp"
    assert cli("export", trained_run, "--format", "tflite", "--out", export).exit_code == 0
    result = cli("predict", tiny_data / "red" / "000.png", "--model", export)  # the folder `export` printed
    assert result.exit_code == 0, result.output and "000.png" in result.stdout


# --------------------------------------------------------------------------- any output path a user can give


def test_predict_csv_to_a_place_that_cannot_take_it_fails_before_predicting(cli, trained_run, tmp_path, tiny_data):
    image = tiny_data / "red" / "000.png"
    assert_user_error(cli("predict", image, "--run", trained_run, "--csv", tmp_path), "--csv", "that is a folder")
    assert_user_error(cli("predict", image, "--run", trained_run, "--csv", tmp_path / "no" / "p.csv"), "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        result = cli("predict", image, "--run", trained_run, "--csv", locked / "p.csv")
    assert_user_error(result, "--csv", "cannot write in")
    assert result.stdout == ""  # refused before any work


def test_a_read_only_run_is_evaluated_reported_and_written_elsewhere(cli, trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "archived")
    (run / "eval.json").unlink()
    with read_only(run):
        result = cli("evaluate", run)
        assert "accuracy" in result.stdout and "macro avg" in result.stdout  # the report is shown anyway
        assert_user_error(result, "cannot write the evaluation report there", "--out")
        elsewhere = cli("evaluate", run, "--out", tmp_path / "report")
        assert elsewhere.exit_code == 0, elsewhere.output
        assert_user_error(cli("plot", run), "the plot", "cannot write in")
        assert cli("plot", run, "--out", tmp_path / "h.png").exit_code == 0
        assert_user_error(cli("export", run, "--format", "keras"), "the export folder", "cannot write in")
        assert cli("export", run, "--format", "keras", "--out", tmp_path / "exp").exit_code == 0
    assert (tmp_path / "report" / "eval.json").is_file() and (tmp_path / "h.png").is_file()
    assert not (run / "eval.json").exists()


def test_output_paths_that_are_folders_or_files_of_the_wrong_kind(cli, tmp_path, tiny_data, tiny_config):
    assert_user_error(cli("inspect", tiny_data, "--out", tmp_path), "--out", "that is a folder")
    not_a_folder = tmp_path / "runs.txt"
    not_a_folder.write_text("x")
    assert_user_error(cli("train", tiny_config, "--runs-dir", not_a_folder), "runs.txt")


# --------------------------------------------------------------------------- any value a key can take


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=.inf", "train.learning_rate: Input should be a finite number"),
    ("train.learning_rate=.nan", "train.learning_rate: Input should be a finite number"),
    ("train.epochs=true", "train.epochs: Input should be a valid integer"),
    ("data.batch_size=false", "data.batch_size: Input should be a valid integer"),
    ("train.epochs=-3", "train.epochs: Input should be greater than or equal to 1"),
    ("train.epochs=1e99", "train.epochs: Input should be a valid integer"),
    ("model.dropout=.inf", "model.dropout"),
    ("model.filters=[16, 32", "--set model.filters=[16, 32: the value is not valid YAML"),
])
def test_values_at_and_past_their_limits_are_one_line_naming_the_key(cli, tiny_config, override, message):
    assert_user_error(cli("config", tiny_config, "--set", override), message)


def test_an_error_never_echoes_more_than_an_excerpt_of_a_huge_value(cli, tiny_config):
    result = cli("config", tiny_config, "--set", "train.epochs=[" + ", ".join(["123456789"] * 5000) + "]")
    assert_user_error(result, "train.epochs")
    assert len(result.stderr) < 400


def test_a_config_file_that_is_not_utf8_or_repeats_a_key_is_one_line(cli, tmp_path):
    (tmp_path / "latin1.yaml").write_bytes(b"data:\n  dir: donn\xe9es/\n")
    assert_user_error(cli("config", tmp_path / "latin1.yaml"), "latin1.yaml: not UTF-8 text", "save it as UTF-8")
    (tmp_path / "twice.yaml").write_text("data:\n  dir: a\ntrain:\n  epochs: 2\ntrain:\n  epochs: 3\n")
    assert_user_error(cli("config", tmp_path / "twice.yaml"), "twice.yaml line 5", "key 'train' is given twice")


# --------------------------------------------------------------------------- numerical failure


@pytest.mark.slow
def test_a_diverging_run_fails_at_once_and_keeps_no_nan_model(cli, tmp_path, tiny_config):
    result = cli("train", tiny_config, "--runs-dir", tmp_path / "runs", "--set", "train.learning_rate=1e30",
                 "--set", "train.epochs=5")
    assert result.exit_code == 2
    assert "training failed: the loss diverged (NaN, infinite or over 1e6) at epoch 1" in result.stderr
    assert "lower train.learning_rate" in result.stderr and "Traceback" not in result.output
    run = (tmp_path / "runs" / "latest").resolve()
    metrics = files.read_json(run / "metrics.json")
    assert metrics["status"] == "failed" and metrics["epochs_run"] == 1 and metrics["best_epoch"] is None
    assert not (run / "best.keras").exists() and not (run / "backup").exists()
    assert_user_error(cli("predict", tmp_path, "--run", run), "no best.keras")


@pytest.mark.parametrize("loss, diverged", [(2.3, False), (16.0, False), (float("nan"), True), (float("inf"), True),
                                            (5.9e20, True)])  # the last: lr 1e6, finite but exploded
def test_a_loss_that_is_nan_infinite_or_exploded_stops_training(loss, diverged):
    from imgcls.training.callbacks import StopOnNonFiniteLoss

    class Model:
        stop_training = False

    stopper = StopOnNonFiniteLoss()
    stopper.set_model(Model())
    stopper.on_epoch_begin(2)
    stopper.on_train_batch_end(11, {"loss": loss})
    assert stopper.model.stop_training is diverged and stopper.diverged == ("epoch 3, step 12" if diverged else "")


def test_an_epoch_whose_loss_exploded_is_never_the_best():
    from imgcls.run.status import best_row

    rows = [{"epoch": 1, "loss": 2.0, "val_loss": 1.9, "val_accuracy": 0.4},
            {"epoch": 2, "loss": 3e20, "val_loss": 5e23, "val_accuracy": 0.5}]  # a lucky accuracy from exploded weights
    assert best_row(rows, "val_accuracy", "auto")["epoch"] == 1
    assert best_row(rows[1:], "val_accuracy", "auto") is None


def test_predict_never_prints_a_nan_confidence(cli, tmp_path, tiny_data):
    import keras

    inputs = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(3)
    outputs = keras.layers.Activation("softmax")(dense(keras.layers.Flatten()(inputs)))
    model = keras.Model(inputs, outputs)
    dense.kernel.assign(np.full(dense.kernel.shape, np.nan, np.float32))  # what a diverged training leaves
    model.save(tmp_path / "nan.keras")
    (tmp_path / "labels.txt").write_text("blue\ngreen\nred\n")
    result = cli("predict", tiny_data / "red" / "000.png", "--model", tmp_path / "nan.keras")
    assert_user_error(result, "NaN or infinite outputs", "train it again")
    assert "nan" not in result.stdout


# --------------------------------------------------------------------------- what a person types and sees


def test_a_class_name_with_a_tab_or_newline_stays_one_field_of_one_line(cli, tmp_path):
    from imgcls.infer.predict import Prediction

    line = Prediction("a\tb.png", "two\nlines", 0.5, [{"label": "two\nlines", "confidence": 0.5},
                                                       {"label": "x\ty", "confidence": 0.5}]).line()
    assert line.count("\t") == 3 and "\n" not in line and "two\\nlines" in line and "x\\ty" in line


@pytest.mark.slow
def test_a_signal_that_lands_in_a_librarys_bare_except_still_stops_the_run(tmp_path, tiny_data):
    """Keras converts every step's logs inside `try: ... except: pass`: a signal handled there must not be lost."""
    import keras

    from imgcls.launch import launch_training

    class SignalInsideBareExcept(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                try:
                    os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, inside the `try`
                    time.sleep(0.01)
                except:  # noqa: E722 - the library code this stands for
                    pass

    config = write_config(tmp_path / "c.yaml", tiny_data, data={"batch_size": 4}, train={"epochs": 50})
    run, metrics = launch_training(config, runs_dir=tmp_path / "runs", callbacks=[SignalInsideBareExcept()],
                                   log=lambda *a, **k: None)
    assert metrics["status"] == "interrupted" and metrics["epochs_run"] == 0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back once the run's files are written


@pytest.mark.slow
def test_two_ctrl_c_in_a_row_end_the_run_cleanly_without_a_traceback(tmp_path, tiny_data):
    config = write_config(tmp_path / "c.yaml", tiny_data, data={"batch_size": 1}, train={"epochs": 500})
    runs_dir = tmp_path / "runs"
    process = training_process_after_its_first_epoch(config, runs_dir)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # impatient: again while it is stopping
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    run = (runs_dir / "latest").resolve()
    assert files.read_json(run / "metrics.json")["status"] == "interrupted"


def test_a_model_file_given_as_the_run_says_to_use_model(cli, tmp_path):
    (tmp_path / "best.keras").write_bytes(b"")
    assert_user_error(cli("predict", tmp_path / "x.png", "--run", tmp_path / "best.keras"), "a model file is for --model")
