"""`imgcls export`: every format and quantization loads back, agrees with the Keras model and predicts like the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_user_error, run_cli

from imgcls.run import layout

pytestmark = pytest.mark.slow  # every test here trains, or reads a run trained for this module

EXPORTS = [("keras", "none"), ("savedmodel", "none"), ("tflite", "none"),
           ("tflite", "float16"), ("tflite", "dynamic"), ("tflite", "int8")]
IDS = [f"{fmt}-{quantize}" for fmt, quantize in EXPORTS]
MODEL_IN = {"keras": "model.keras", "savedmodel": ".", "tflite": "model.tflite"}


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory) -> Path:
    """A private copy of the trained run, so exports do not change the shared one."""
    copy = tmp_path_factory.mktemp("export") / trained_run.name
    shutil.copytree(trained_run, copy)
    return copy


@pytest.fixture(scope="module")
def exports(run) -> dict:
    """Each format and quantization exported once, with the default output folder: {(format, quantize): result}."""
    results = {}
    for fmt, quantize in EXPORTS:
        result = run_cli("export", run, "--format", fmt, "--quantize", quantize)
        assert result.exit_code == 0, result.output
        results[fmt, quantize] = result
    return results


def export_folder(run: Path, fmt: str, quantize: str) -> Path:
    return run / "export" / (fmt if quantize == "none" else f"{fmt}-{quantize}")


def all_images(tiny_data: Path) -> list[Path]:
    return sorted(tiny_data.rglob("*.png"))


# --------------------------------------------------------------------------- what an export holds


@pytest.mark.parametrize("fmt, quantize", EXPORTS, ids=IDS)
def test_export_writes_the_model_labels_and_a_description(run, exports, fmt, quantize):
    folder = export_folder(run, fmt, quantize)
    assert exports[fmt, quantize].stdout.strip() == str(folder)
    assert (folder / MODEL_IN[fmt]).exists()
    classes = layout.read_classes(run)
    assert (folder / "labels.txt").read_text().splitlines() == classes
    info = json.loads((folder / "export.json").read_text())
    assert info["format"] == fmt and info["quantize"] == quantize and info["classes"] == classes
    assert info["input"]["shape"] == [None, 32, 32, 3] and info["input"]["value_range"] == [0, 255]
    assert info["input"]["dtype"] == ("uint8" if quantize == "int8" else "float32")
    assert "resize to 32x32" in info["preprocessing"]
    assert info["source_run"] == str(run.resolve())
    assert info["versions"]["tensorflow"] and info["versions"]["imgcls"]
    assert 0 < info["size_bytes"] and info["source_size_bytes"] == (run / "best.keras").stat().st_size
    check = info["verification"]
    assert check["subset"] == "val" and check["images"] == 9 and check["passed"]
    if quantize != "int8":
        assert check["top1_agreement"] >= 0.99 and check["max_probability_difference"] < 0.01


def test_export_prints_the_agreement_and_the_sizes(exports):
    stderr = exports["tflite", "int8"].stderr
    assert "top-1 agreement with best.keras" in stderr and "9 val images" in stderr
    assert "KiB (tflite-int8) vs" in stderr and "(best.keras)" in stderr


def test_quantized_tflite_files_are_smaller_than_float32(run, exports):
    sizes = {q: (export_folder(run, "tflite", q) / "model.tflite").stat().st_size for q in ("none", "float16", "dynamic", "int8")}
    assert sizes["float16"] < sizes["none"] and sizes["dynamic"] < sizes["none"] and sizes["int8"] < sizes["none"]


def test_no_temporary_folders_are_left_beside_the_exports(run, exports):
    assert sorted(p.name for p in (run / "export").iterdir()) == sorted(export_folder(run, *e).name for e in EXPORTS)


# --------------------------------------------------------------------------- loading back


@pytest.mark.parametrize("fmt, quantize", EXPORTS, ids=IDS)
def test_exported_model_loads_back_and_agrees_with_the_keras_model(run, exports, tiny_data, fmt, quantize):
    from imgcls.infer.classifier import Classifier
    from imgcls.infer.predict import class_probabilities

    files = all_images(tiny_data)
    expected = class_probabilities(Classifier.from_run(run), files)
    exported = Classifier.from_path(export_folder(run, fmt, quantize) / MODEL_IN[fmt])
    got = class_probabilities(exported, files)
    agreement = np.mean(expected.argmax(1) == got.argmax(1))
    # int8 may flip an image whose two best classes are nearly tied; the others may not.
    assert agreement >= (0.9 if quantize == "int8" else 1.0)
    assert np.abs(expected - got).max() < (0.05 if quantize == "int8" else 0.01)


@pytest.mark.parametrize("fmt, quantize", EXPORTS, ids=IDS)
def test_predict_with_an_exported_model_gives_the_labels_of_the_run(cli, run, exports, tiny_data, fmt, quantize):
    by_run = cli("predict", tiny_data, "--run", run, "--json")
    by_model = cli("predict", tiny_data, "--model", export_folder(run, fmt, quantize) / MODEL_IN[fmt], "--json")
    assert by_model.exit_code == 0, by_model.output
    labels = [[p["label"] for p in json.loads(r.stdout)] for r in (by_run, by_model)]
    assert len(labels[0]) == 36
    if quantize == "int8":
        assert np.mean(np.array(labels[0]) == np.array(labels[1])) >= 0.9
    else:
        assert labels[1] == labels[0]


@pytest.mark.parametrize("fmt, quantize", EXPORTS, ids=IDS)
def test_predict_one_image_with_an_exported_model(cli, run, exports, tiny_data, fmt, quantize):
    """One image is a batch of one: the size a .tflite file is written with, which must still be allocated."""
    image = tiny_data / "green" / "001.png"
    by_run = cli("predict", image, "--run", run, "--json")
    by_model = cli("predict", image, "--model", export_folder(run, fmt, quantize) / MODEL_IN[fmt], "--json")
    assert by_model.exit_code == 0, by_model.output
    assert json.loads(by_model.stdout)[0]["label"] == json.loads(by_run.stdout)[0]["label"]


def test_predict_with_a_runs_export_folder_takes_its_only_export_or_names_them(cli, run, exports, tiny_data, tmp_path):
    image = tiny_data / "green" / "001.png"
    one = tmp_path / "one" / "export"
    shutil.copytree(export_folder(run, "tflite", "int8"), one / "tflite-int8")
    by_folder = cli("predict", image, "--model", one, "--json")
    assert by_folder.exit_code == 0, by_folder.output
    assert json.loads(by_folder.stdout)[0]["label"] == json.loads(cli("predict", image, "--run", run, "--json").stdout)[0]["label"]
    assert_user_error(cli("predict", image, "--model", run / "export"), f"holds {len(EXPORTS)} exports",
                      "savedmodel, tflite", "give one of them")


def test_int8_export_and_a_tflite_predict_on_tensorflow_print_no_native_noise(run, exports, tiny_data, tmp_path):
    """TensorFlow's C++ lines ("fully_quantize: 0, ...", "Created TensorFlow Lite XNNPACK delegate") are noise."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    out = tmp_path / "int8"
    export = subprocess.run([sys.executable, "-m", "imgcls", "export", run, "--format", "tflite", "--quantize", "int8",
                             "--out", out], capture_output=True, text=True, env=env, timeout=600)
    assert export.returncode == 0 and "fully_quantize" not in export.stderr, export.stderr
    image = tiny_data / "green" / "001.png"
    no_litert = "import sys; sys.modules['ai_edge_litert'] = None; from imgcls.cli import main; main()"
    predict = subprocess.run([sys.executable, "-c", no_litert, "predict", image, "--model", out],
                             capture_output=True, text=True, env=env, timeout=600)
    assert predict.returncode == 0 and predict.stdout.strip(), predict.stderr
    assert "XNNPACK" not in predict.stderr and "INFO:" not in predict.stderr, predict.stderr


def test_tflite_runs_on_tensorflows_own_interpreter_where_litert_is_not_installed(run, exports, tiny_data, monkeypatch):
    from imgcls.infer.classifier import Classifier
    from imgcls.infer.predict import class_probabilities

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # `import ai_edge_litert...` now fails
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    exported = Classifier.from_path(export_folder(run, "tflite", "none") / "model.tflite")
    assert type(exported.model).__module__.startswith("tensorflow.")
    files = all_images(tiny_data)
    expected = class_probabilities(Classifier.from_run(run), files)
    np.testing.assert_array_equal(class_probabilities(exported, files).argmax(1), expected.argmax(1))


def test_savedmodel_serves_floats_uint8_and_encoded_images_alike(run, exports, tiny_data):
    import tensorflow as tf

    from imgcls.data.pipeline import load_image

    files = all_images(tiny_data)[:4]
    pixels = np.stack([load_image(str(f), (32, 32), 3).numpy() for f in files])
    serving = tf.saved_model.load(str(export_folder(run, "savedmodel", "none"))).signatures
    from_floats = serving["serving_default"](images=tf.constant(pixels, tf.float32))["probabilities"].numpy()
    from_uint8 = serving["serving_uint8"](images=tf.constant(pixels))["probabilities"].numpy()
    from_bytes = serving["serving_bytes"](image_bytes=tf.constant([f.read_bytes() for f in files]))["probabilities"].numpy()
    np.testing.assert_allclose(from_uint8, from_floats, atol=1e-6)
    np.testing.assert_allclose(from_bytes, from_floats, atol=1e-6)
    assert from_floats.shape == (4, 3)


def test_saved_model_cli_lists_the_serving_signatures(run, exports):
    cli_path = Path(sys.executable).parent / "saved_model_cli"
    if not cli_path.exists():
        pytest.skip("saved_model_cli is not installed beside this Python")
    shown = subprocess.run([str(cli_path), "show", "--dir", str(export_folder(run, "savedmodel", "none")), "--all"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    for signature in ("serving_default", "serving_uint8", "serving_bytes"):
        assert f"signature_def['{signature}']" in shown.stdout


def test_int8_model_takes_raw_uint8_pixels(run, exports, tiny_data):
    """A device feeds the decoded pixels as they are: input scale 1, zero point 0, uint8, no conversion."""
    from imgcls.data.pipeline import load_image
    from imgcls.infer.classifier import Classifier
    from imgcls.infer.predict import class_probabilities

    folder = export_folder(run, "tflite", "int8")
    info = json.loads((folder / "export.json").read_text())
    assert info["input"]["dtype"] == "uint8" and info["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert info["verification"]["required_agreement"] == 0.9
    interpreter = Classifier.from_path(folder / "model.tflite").model
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    files = all_images(tiny_data)
    labels = []
    for file in files:
        pixels = load_image(str(file), (32, 32), 3).numpy()[None]  # uint8, straight from the decoder
        interpreter.resize_tensor_input(source["index"], pixels.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], pixels)
        interpreter.invoke()
        labels.append(int(interpreter.get_tensor(target["index"])[0].argmax()))
    expected = class_probabilities(Classifier.from_run(run), files).argmax(1)
    assert np.mean(np.array(labels) == expected) >= 0.9


# --------------------------------------------------------------------------- re-export, --out


def test_exporting_again_replaces_the_previous_export(cli, run, exports):
    folder = export_folder(run, "keras", "none")
    (folder / "stale.txt").write_text("from an older export")
    assert cli("export", run, "--format", "keras").exit_code == 0
    assert not (folder / "stale.txt").exists() and (folder / "model.keras").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_export_to_a_chosen_folder_and_from_runs_latest(cli, trained_run, tmp_path):
    out = tmp_path / "shipped"
    result = cli("export", "--runs-dir", trained_run.parent, "--format", "keras", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "model.keras").is_file() and (out / "labels.txt").is_file()
    assert json.loads((out / "export.json").read_text())["source_run"] == str(trained_run)


# --------------------------------------------------------------------------- errors


def test_error_export_of_a_run_without_best_keras_writes_nothing(cli, run, tmp_path):
    broken = tmp_path / "unfinished"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("best.keras", "export"))
    assert_user_error(cli("export", broken, "--format", "tflite"), "no best.keras", "train again")
    assert not (broken / "export").exists()


def test_error_unknown_format_or_quantization(cli, run):
    assert_user_error(cli("export", run, "--format", "tflight"), "unknown format (did you mean tflite?)", "savedmodel")
    assert_user_error(cli("export", run, "--format", "tflite", "--quantize", "int4"), "unknown quantization", "int8")
    assert_user_error(cli("export", run, "--format", "savedmodel", "--quantize", "int8"), "tflite only")


def run_without_its_data(run: Path, tmp_path: Path) -> Path:
    """A copy of the run whose data folder is gone, as on another machine."""
    moved = tmp_path / "run-elsewhere"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("export"))
    config = layout.read_config(moved)
    config["data"]["dir"] = config["imgcls"]["data_dir"] = str(tmp_path / "deleted-data")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    return moved


def test_export_without_the_data_folder_is_kept_but_marked_unchecked(cli, run, tmp_path):
    moved = run_without_its_data(run, tmp_path)
    result = cli("export", moved, "--format", "keras")
    assert result.exit_code == 0 and "the export was not checked" in result.stderr
    info = json.loads((moved / "export" / "keras" / "export.json").read_text())
    assert "skipped" in info["verification"]


def test_error_int8_without_readable_training_images(cli, run, tmp_path):
    moved = run_without_its_data(run, tmp_path)
    assert_user_error(cli("export", moved, "--format", "tflite", "--quantize", "int8"),
                      "int8 calibrates on training images", "none of the 27 training images", "--quantize dynamic")
    assert not (moved / "export").exists()


def test_error_tflite_conversion_failure_leaves_no_folder(cli, run, tmp_path, monkeypatch):
    from tensorflow.lite.python import lite

    def unsupported(self):
        raise lite.ConverterError("loc(fused): error: 'tf.FancyOp' op is neither a custom op nor a flex op\nerror: failed")

    # Keras converts through a SavedModel, so this is the converter it uses.
    monkeypatch.setattr(lite.TFLiteSavedModelConverterV2, "convert", unsupported)
    out = tmp_path / "tflite"
    assert_user_error(cli("export", run, "--format", "tflite", "--out", out),
                      "TFLite conversion failed", "tf.FancyOp", "try --format savedmodel")
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt, quantize", [("keras", "none"), ("tflite", "int8")], ids=["keras", "tflite-int8"])
def test_error_an_export_that_does_not_answer_like_best_keras_is_refused(cli, run, tmp_path, monkeypatch, fmt, quantize):
    """The check catches a real mistake: the written model's weights are not best.keras' (here, shuffled before writing)."""
    from imgcls.infer import export

    real_writer = export.WRITERS[fmt]

    def write_other_weights(source, folder, quantize, representative):
        trained = source.model.get_weights()
        rng = np.random.default_rng(0)
        source.model.set_weights([rng.permutation(w.ravel()).reshape(w.shape) for w in trained])
        try:
            return real_writer(source, folder, quantize, representative)
        finally:
            source.model.set_weights(trained)  # best.keras, as the check compares against it

    monkeypatch.setitem(export.WRITERS, fmt, write_other_weights)
    out = tmp_path / fmt
    assert_user_error(cli("export", run, "--format", fmt, "--quantize", quantize, "--out", out),
                      "agrees with best.keras on only", "nothing was written")
    assert not list(tmp_path.iterdir())


def test_error_out_folder_that_is_not_an_export_is_left_alone(cli, run, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    assert_user_error(cli("export", run, "--format", "keras", "--out", tmp_path), "not an imgcls export folder")
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_error_predict_model_problems(cli, run, exports, tiny_data, tmp_path):
    image = tiny_data / "red" / "000.png"
    model = export_folder(run, "tflite", "none") / "model.tflite"
    assert_user_error(cli("predict", image, "--run", run, "--model", model), "--run or --model, not both")
    lonely = tmp_path / "lonely.tflite"
    shutil.copyfile(model, lonely)
    assert_user_error(cli("predict", image, "--model", lonely), "no labels.txt beside the model")
    assert_user_error(cli("predict", image, "--model", run / "config.yaml"), "not a model imgcls can read")
    assert_user_error(cli("predict", image, "--model", tmp_path / "ghost.keras"), "no such model file")


def test_export_argument_errors_do_not_import_tensorflow():
    code = ("import sys; from typer.testing import CliRunner; from imgcls.cli import app;"
            "r = CliRunner().invoke(app, ['export', 'nowhere', '--format', 'onnx']);"
            "print(r.exit_code, 'tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "2 False"
