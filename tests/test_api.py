"""imgcls from Python: one test per public call, each the same as its command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgcls
from conftest import COLOURS, make_image_folder, write_config


def test_the_public_names_are_listed_and_importing_them_does_not_import_tensorflow():
    code = ("import sys, imgcls; from imgcls import *; "
            "print(sorted(imgcls.__all__), 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert output == ("['ConfigError', 'ImgclsError', 'Run', '__version__', 'load_run', 'predict', 'runs', 'train'] "
                      "False False")


def test_a_config_typo_raises_config_error_with_the_clis_line(tmp_path):
    with pytest.raises(imgcls.ConfigError, match=r"^trian: unknown key; did you mean train\?") as raised:
        imgcls.train({"data": {"dir": str(tmp_path)}, "trian": {"epochs": 1}})
    assert isinstance(raised.value, imgcls.ImgclsError) and "\n" not in str(raised.value)
    with pytest.raises(imgcls.ConfigError, match="data.batch_size"):
        imgcls.train({"data": {"dir": str(tmp_path)}}, batch_size=0)


@pytest.mark.parametrize("images, fragment", [
    (np.full((8, 8, 3), 0.5), "float values 0 to 1; give raw pixels 0-255"),
    (np.zeros((8, 8, 2), np.uint8), r"shape \(8, 8, 2\) is not an image"),
    (np.full((8, 8), np.nan), "NaN or infinite values"),
    (None, "images: give a path, a folder, an array, a PIL image or a list of them"),
    ([{"a": 1}], "a dict is not an image"),
])
def test_images_that_are_not_raw_pixels_are_one_line_before_any_model_loads(tmp_path, images, fragment):
    with pytest.raises(imgcls.ImgclsError, match=fragment):
        imgcls.predict(images, model=tmp_path / "not-loaded")


def test_a_run_is_a_run_folder(tmp_path):
    with pytest.raises(imgcls.ImgclsError, match="not an imgcls run folder"):
        imgcls.Run(tmp_path)


@pytest.mark.parametrize("call, fragment", [
    (lambda: imgcls.train(42), "config: give a YAML file's path, a dict shaped like the YAML, or a Config (got int)"),
    (lambda: imgcls.train({"data": {"dir": "d"}}, epoch=3), "epoch=: not a keyword of imgcls.train; did you mean epochs?"),
    (lambda: imgcls.train({"data": {"dir": "d"}}, resume=True), "resume=True continues a run: give its folder"),
])
def test_python_mistakes_in_a_train_call_are_one_line(call, fragment):
    with pytest.raises(imgcls.ImgclsError, match=re.escape(fragment)):
        call()


@pytest.mark.slow
def test_train_takes_a_dict_with_keywords_and_dotted_keys_and_returns_the_run(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=8)
    config = {"data": {"dir": str(data), "validation_split": 0.25}, "model": {"name": "simple_cnn"},
              "runtime": {"precision": "float32"}}
    run = imgcls.train(config, epochs=np.int64(2), batch_size=8, image_size=32, runs_dir=tmp_path / "runs",
                       **{"model.filters": [8, 16], "model.dense": [16]})
    assert run.path.parent == tmp_path / "runs" and run.path.name.startswith("data-") and run.path.is_absolute()
    assert run.status == "finished" and run.metrics["status"] == "finished"
    assert [row["epoch"] for row in run.history] == [1, 2]
    assert run.config["data"]["batch_size"] == 8 and run.config["model"]["filters"] == [8, 16]
    assert run.classes == sorted(COLOURS)


@pytest.mark.slow
def test_a_callback_that_stops_training_marks_the_run_stopped_early(tmp_path, tiny_config):
    import keras

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    run = imgcls.train(tiny_config, runs_dir=tmp_path, epochs=3, callbacks=StopAfterFirstEpoch())
    assert run.status == "stopped_early" and len(run.history) == 1


@pytest.mark.slow
def test_a_second_run_in_one_process_does_not_inherit_the_first_ones_precision(tmp_path, tiny_config):
    import keras

    mixed = imgcls.train(tiny_config, runs_dir=tmp_path, epochs=1, **{"runtime.precision": "mixed_bfloat16"})
    plain = imgcls.train(tiny_config, runs_dir=tmp_path, epochs=1, **{"runtime.precision": "float32"})
    assert mixed.config["imgcls"]["precision"] == "mixed_bfloat16"
    assert plain.config["imgcls"]["precision"] == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_load_run_and_runs_read_what_training_wrote(trained_run):
    run = imgcls.load_run(trained_run)
    assert run.path == trained_run and run.status == "finished"
    assert repr(run).startswith(f"Run('{trained_run}', finished, best val_accuracy")
    listed = imgcls.runs(trained_run.parent)
    assert [row["path"] for row in listed] == [str(trained_run)]
    assert imgcls.load_run("latest", runs_dir=trained_run.parent).path.resolve() == trained_run.resolve()


def test_plot_returns_a_figure_of_the_curves(trained_run):
    from matplotlib.figure import Figure

    figure = imgcls.load_run(trained_run).plot()
    assert isinstance(figure, Figure) and len(figure.axes) == 3


def test_predict_gives_the_rows_of_predict_json_for_files_arrays_and_pil_images(cli, trained_run, tiny_data):
    files = sorted((tiny_data / "red").iterdir())[:2]
    run = imgcls.load_run(trained_run)
    rows = run.predict(files, top_k=2)
    cli_rows = json.loads(cli("predict", *files, "--run", trained_run, "--top-k", 2, "--json").stdout)
    assert rows == cli_rows
    pixels = np.asarray(Image.open(files[0]).convert("RGB"))
    from_array, from_batch, from_pil = (run.predict(pixels, top_k=2), run.predict(pixels[None], top_k=2),
                                        run.predict(Image.open(files[0]), top_k=2))
    assert from_array[0]["path"] == "array[0]" and from_pil[0]["path"] == "image[0]"
    for row in (from_array[0], from_batch[0], from_pil[0]):
        assert row["label"] == rows[0]["label"] and row["top_k"] == rows[0]["top_k"]
    assert run.predict(Image.open(files[0]).convert("CMYK"))[0]["path"] == "image[0]"  # PNG cannot hold CMYK
    assert run.predict([]) == []


def test_evaluate_gives_the_figures_of_evaluate_json(cli, trained_run):
    result = imgcls.load_run(trained_run).evaluate(split="val")
    assert result == json.loads(cli("evaluate", trained_run, "--json").stdout)
    assert (trained_run / "eval.json").is_file()


def test_model_is_the_keras_model_of_best_keras(trained_run):
    import keras

    model = imgcls.load_run(trained_run).model
    assert isinstance(model, keras.Model) and model.output_shape == (None, 3)


def test_export_returns_the_folder_and_predict_reads_it(trained_run, tmp_path, tiny_data):
    run = imgcls.load_run(trained_run)
    folder = run.export("tflite", out=tmp_path / "tflite")
    assert folder == tmp_path / "tflite" and (folder / "labels.txt").is_file()
    image = sorted((tiny_data / "green").iterdir())[0]
    assert imgcls.predict([image], model=folder)[0]["label"] == run.predict([image])[0]["label"]


ROOT = Path(__file__).parents[1]


def a_repository_copy(folder: Path) -> Path:
    """The config and data the notebook uses, in a scratch folder, so its runs/ goes there."""
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "digits.yaml").write_text((ROOT / "configs" / "digits.yaml").read_text())
    (folder / "data").mkdir()
    (folder / "data" / "digits").symlink_to(ROOT / "data" / "digits")
    return folder


@pytest.mark.slow
def test_the_example_notebook_runs_in_a_real_kernel(tmp_path):
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the dev extra")
    import nbformat

    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "outputs stripped in git"
    # As written, but shorter, and in the precision the test needs rather than what `auto` picks on this CPU.
    notebook.cells[1].source = notebook.cells[1].source.replace("epochs=3", 'epochs=1, **{"runtime.precision": "float32"}')
    assert "float32" in notebook.cells[1].source
    folder = a_repository_copy(tmp_path / "repo")
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    images = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert images, "the notebook shows no figure"


@pytest.mark.slow
def test_interrupting_the_kernel_stops_the_run_cleanly_and_leaves_the_kernel_usable(tmp_path, tiny_data):
    manager = pytest.importorskip("jupyter_client.manager", reason="jupyter_client is in the dev extra")

    config = write_config(tmp_path / "long.yaml", tiny_data, train={"epochs": 5000},
                          callbacks={"early_stopping": {"enabled": False}})
    kernel, client = manager.start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        client.execute(f"import imgcls\nrun = imgcls.train({str(config)!r}, runs_dir='runs')")
        history = _wait_for(lambda: next(iter(tmp_path.glob("runs/*/history.csv")), None), seconds=300)
        _wait_for(lambda: len(history.read_text().splitlines()) >= 3, seconds=300)  # two epochs done
        kernel.interrupt_kernel()
        reply = client.get_shell_msg(timeout=300)
        assert reply["content"]["status"] == "ok", reply["content"]  # train returned: no KeyboardInterrupt shown
        printed = []
        client.execute_interactive("print(run.status, len(run.history) >= 2, (run.path / 'best.keras').is_file())",
                                   timeout=120, output_hook=lambda msg: printed.append(msg["content"].get("text", "")))
        assert "".join(printed).strip() == "interrupted True True"
    finally:
        client.stop_channels()
        kernel.shutdown_kernel(now=True)


def _wait_for(condition, seconds: float):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")
