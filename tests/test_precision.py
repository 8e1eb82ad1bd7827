"""Any precision: a run trained in float32, mixed_bfloat16 or mixed_float16 leaves float32 artifacts that answer alike.

Both mixed policies run on any CPU (slowly; at 32x32 that is seconds), so
every machine tests all three: each run is stopped after its first epoch and
resumed, then goes through predict, evaluate and every export, and a LiteRT
client that is not imgcls reads the TFLite files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from conftest import run_cli, training, write_config
from test_export import EXPORTS, IDS, MODEL_IN, export_folder

from imgcls import files
from imgcls.run import layout

pytestmark = pytest.mark.slow  # every test here trains, or reads a run trained for this module

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16"]


@pytest.fixture(scope="module", params=POLICIES)
def trained(request, tmp_path_factory, tiny_data):
    """A 3-epoch run under the policy, stopped by Ctrl-C after epoch 1 and resumed, then exported in every way."""
    policy = request.param
    root = tmp_path_factory.mktemp(policy)
    config = write_config(root / "tiny.yaml", tiny_data, train={"epochs": 3}, runtime={"precision": policy})
    stopped = training(config, runs_dir=root / "runs", stop_after_epoch=1)
    resumed = training(resume=True, runs_dir=root / "runs")
    run = (root / "runs" / "latest").resolve()
    exports = {(fmt, quantize): run_cli("export", run, "--format", fmt, "--quantize", quantize) for fmt, quantize in EXPORTS}
    return SimpleNamespace(policy=policy, run=run, stopped=stopped, resumed=resumed, exports=exports)


def images(tiny_data):
    return sorted(tiny_data.rglob("*.png"))


def predicted_labels(run, files) -> list[str]:
    result = run_cli("predict", *files, "--run", run, "--json")
    assert result.exit_code == 0, result.output
    return [p["label"] for p in json.loads(result.stdout)]


# --------------------------------------------------------------------------- training and resume


def test_the_run_trains_and_resumes_in_its_precision_and_records_it(trained):
    assert trained.stopped.exit_code == 130 and trained.resumed.exit_code == 0, trained.resumed.output
    assert f"precision {trained.policy}" in trained.resumed.stderr
    assert "resuming after epoch 1 of 3 (optimizer step 4)" in trained.resumed.stderr  # 27 images, batches of 8
    assert layout.read_config(trained.run)["imgcls"]["precision"] == trained.policy
    metrics = files.read_json(trained.run / "metrics.json")
    assert metrics["precision"] == trained.policy and metrics["status"] == "finished" and metrics["epochs_run"] == 3


def tiny_compiled_model(policy: str):
    """A two-layer model compiled as training compiles: under `policy` (mixed_float16: a LossScaleOptimizer)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        inputs = keras.Input((4,))
        outputs = keras.layers.Activation("softmax", dtype="float32")(keras.layers.Dense(2)(inputs))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_mixed_float16_backup_keeps_the_loss_scale(tmp_path):
    """mixed_float16 trains through a LossScaleOptimizer; resuming must not reset its dynamic loss scale."""
    from imgcls.training import checkpoints

    trained_model = tiny_compiled_model("mixed_float16")
    trained_model.fit(np.ones((8, 4)), np.zeros(8), epochs=3, verbose=0)
    assert type(trained_model.optimizer).__name__ == "LossScaleOptimizer"
    trained_model.optimizer.dynamic_scale.assign(512.0)  # as if steps had overflowed: not the initial 2**15
    checkpoints.save_backup(trained_model, tmp_path, 3, [])
    restored = tiny_compiled_model("mixed_float16")
    checkpoints.restore_state(restored, tmp_path)
    assert float(restored.optimizer.dynamic_scale) == 512.0
    for saved, loaded in zip(trained_model.optimizer.variables, restored.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(loaded), err_msg=saved.path)


@pytest.mark.parametrize("saved, resumed", [("mixed_float16", "float32"), ("mixed_bfloat16", "mixed_float16")])
def test_a_resume_that_changes_to_or_from_mixed_float16_is_refused_not_restarted(tmp_path, saved, resumed):
    """Keras would skip the optimizer state with a warning: the schedule would restart at step 0 (a --force resume)."""
    from imgcls.training import checkpoints
    from imgcls.errors import ImgclsError

    trained_model = tiny_compiled_model(saved)
    trained_model.fit(np.ones((8, 4)), np.zeros(8), epochs=1, verbose=0)
    checkpoints.save_backup(trained_model, tmp_path, 1, [])
    with pytest.raises(ImgclsError, match=f"the backup holds the state of .* under {saved} .* this config trains with "
                                          f".* under {resumed} .*; resume with the run's own train.optimizer and runtime.precision"):
        checkpoints.restore_state(tiny_compiled_model(resumed), tmp_path)


# --------------------------------------------------------------------------- what the artifacts compute in


def test_best_keras_computes_in_float32_whatever_the_run_trained_in(trained):
    from imgcls.models import half_precision_layers

    assert "mixed_" not in zipfile.ZipFile(trained.run / "best.keras").read("config.json").decode()
    model = keras.saving.load_model(trained.run / "best.keras")
    assert half_precision_layers(model) == [] and getattr(model, "optimizer", None) is None  # the backup has it


def test_every_export_computes_in_float32_unless_quantized(trained):
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    from imgcls.infer.classifier import Classifier

    for (fmt, quantize), result in trained.exports.items():
        assert result.exit_code == 0, result.output
        info = json.loads((export_folder(trained.run, fmt, quantize) / "export.json").read_text())
        assert info["precision"]["trained"] == trained.policy and info["verification"]["passed"]
        assert info["precision"]["computes"] == {"none": "float32", "int8": "int8"}.get(quantize, info["precision"]["computes"])
    keras_file = export_folder(trained.run, "keras", "none") / "model.keras"
    assert "mixed_" not in zipfile.ZipFile(keras_file).read("config.json").decode()

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export_folder(trained.run, "savedmodel", "none") / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    nodes = [*graph.node, *(node for function in graph.library.function for node in function.node_def)]
    dtypes = {types_pb2.DataType.Name(value.type) for node in nodes for value in node.attr.values() if value.type}
    assert "DT_FLOAT" in dtypes and not dtypes & {"DT_BFLOAT16", "DT_HALF"}

    interpreter = Classifier.from_path(export_folder(trained.run, "tflite", "none") / "model.tflite").model
    assert np.float16 not in {detail["dtype"] for detail in interpreter.get_tensor_details()}


def test_float32_artifacts_agree_with_the_model_as_it_trained(trained, tiny_data):
    """best.keras's weights in the network as training built it (the run's policy) give the same top-1 answers."""
    from imgcls.config import load_config
    from imgcls.data.pipeline import load_image
    from imgcls.models import build_model, half_precision_layers

    config = load_config(trained.run / "config.yaml")
    keras.mixed_precision.set_global_policy(trained.policy)
    try:
        as_trained = build_model(config, len(layout.read_classes(trained.run)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert bool(half_precision_layers(as_trained)) == (trained.policy != "float32")
    best = keras.saving.load_model(trained.run / "best.keras")
    as_trained.set_weights(best.get_weights())
    pixels = np.stack([load_image(str(f), (32, 32), 3).numpy() for f in images(tiny_data)]).astype("float32")
    agreement = np.mean(best.predict(pixels, verbose=0).argmax(1) == as_trained.predict(pixels, verbose=0).argmax(1))
    assert agreement >= 0.99


# --------------------------------------------------------------------------- predict, evaluate, a client that is not ours


def test_predict_and_evaluate_answer_alike(trained, tiny_data):
    val = [path for path, _ in layout.subset_images(trained.run, "val")]
    labels = predicted_labels(trained.run, val)
    result = run_cli("evaluate", trained.run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    truth = [name for _, name in layout.subset_images(trained.run, "val")]
    assert report["images"] == len(val) == 9
    assert report["accuracy"] == pytest.approx(np.mean(np.array(labels) == np.array(truth)))


@pytest.mark.parametrize("fmt, quantize", EXPORTS, ids=IDS)
def test_every_export_predicts_the_labels_of_the_run(trained, tiny_data, fmt, quantize):
    files = images(tiny_data)
    by_run = predicted_labels(trained.run, files)
    by_model = run_cli("predict", *files, "--model", export_folder(trained.run, fmt, quantize) / MODEL_IN[fmt], "--json")
    assert by_model.exit_code == 0, by_model.output
    agreement = np.mean(np.array(by_run) == np.array([p["label"] for p in json.loads(by_model.stdout)]))
    assert agreement >= (0.9 if quantize == "int8" else 1.0)


# A device app's view: the LiteRT interpreter alone (no TensorFlow, no imgcls), labels.txt, and pixels
# decoded by Pillow. The test images are 32x32 already, the model's size, so there is nothing to resize.
LITERT_CLIENT = """
import json, os, sys
import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter

model, files = sys.argv[1], sys.argv[2:]
labels = open(os.path.join(os.path.dirname(model), "labels.txt"), encoding="utf-8").read().splitlines()
interpreter = Interpreter(model_path=model)
interpreter.allocate_tensors()
source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
answers = []
for file in files:
    pixels = np.asarray(Image.open(file).convert("RGB"), np.float32)[None]
    scale, zero_point = source["quantization"]
    if scale:
        pixels = np.round(pixels / scale + zero_point)
    interpreter.set_tensor(source["index"], pixels.astype(source["dtype"]))
    interpreter.invoke()
    answers.append(labels[int(np.argmax(interpreter.get_tensor(target["index"])[0]))])
print(json.dumps({"labels": answers, "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic", "int8"])
def test_the_standalone_litert_interpreter_gives_the_labels_of_imgcls_predict(trained, tiny_data, quantize):
    pytest.importorskip("ai_edge_litert", reason="the dev extra installs ai-edge-litert")
    files = images(tiny_data)
    model = export_folder(trained.run, "tflite", quantize) / "model.tflite"
    client = subprocess.run([sys.executable, "-c", LITERT_CLIENT, str(model), *map(str, files)],
                            capture_output=True, text=True, timeout=300)
    assert client.returncode == 0, client.stderr
    answer = json.loads(client.stdout)
    assert answer["tensorflow"] is False
    agreement = np.mean(np.array(answer["labels"]) == np.array(predicted_labels(trained.run, files)))
    assert agreement >= (0.9 if quantize == "int8" else 1.0)


# --------------------------------------------------------------------------- XLA


def test_a_run_trained_with_xla_exports_to_tflite(tmp_path, tiny_data):
    config = write_config(tmp_path / "xla.yaml", tiny_data, train={"epochs": 1}, runtime={"jit_compile": True})
    result = run_cli("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "precision float32, XLA" in result.stderr
    run = (tmp_path / "runs" / "latest").resolve()
    assert layout.read_config(run)["imgcls"]["jit_compile"] is True
    exported = run_cli("export", run, "--format", "tflite")
    assert exported.exit_code == 0, exported.output
    assert json.loads((export_folder(run, "tflite", "none") / "export.json").read_text())["verification"]["passed"]
