"""Classifier: a trained model from any artifact, behind one batched call.

    Classifier.from_run(run)        a run's best.keras with its classes.json
    Classifier.from_path(path)      a .keras file, a SavedModel folder or a .tflite file,
                                    with labels.txt beside it (what `imgcls export` writes)

Every kind takes the same input, a batch of uint8 images prepared by
`imgcls.data.load_image`, and returns class probabilities, so `imgcls
predict` and the export check use one prediction path for all of them.
Nothing is executed from a model file: .keras loads in Keras' safe mode,
SavedModel and TFLite files hold graphs, not Python.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from imgcls.run import layout
from imgcls.errors import ImgclsError, first_line

LABELS = "labels.txt"
EXPORT_INFO = "export.json"
SAVED_MODEL_PB = "saved_model.pb"
KINDS = "a .keras file, a SavedModel folder or a .tflite file"


@dataclass
class Classifier:
    class_names: list[str]
    image_size: tuple[int, int]
    channels: int
    predict_batch: Callable[[np.ndarray], np.ndarray]  # uint8 [n, h, w, c] -> probabilities [n, outputs]
    kind: str  # keras | savedmodel | tflite
    source: Path
    model: Any = None  # the loaded Keras model, SavedModel or interpreter
    outputs: int | None = None  # the model's output units: one per class, or one sigmoid for two classes
    needs_tensorflow: bool = True  # False: a .tflite on LiteRT, fed by data.lite_image (imgcls[lite] without TF)

    def __post_init__(self):
        expected = {len(self.class_names), 1} if len(self.class_names) == 2 else {len(self.class_names)}
        if self.outputs is not None and self.outputs not in expected:
            raise ImgclsError(f"{self.source}: the model has {self.outputs} outputs, but its class names (classes.json or "
                              f"labels.txt) list {len(self.class_names)} classes; give the names the model was trained with")

    @classmethod
    def from_run(cls, run: Path) -> Classifier:
        return _keras_classifier(best_model_path(run), layout.read_classes(run))

    @classmethod
    def from_path(cls, path: Path) -> Classifier:
        path = Path(path)
        if not path.exists():
            raise ImgclsError(f"{path}: no such model file or folder; give {KINDS}")
        path = _model_in_export_folder(path)
        if path.is_dir() and (path / SAVED_MODEL_PB).is_file():
            return _savedmodel_classifier(path, read_labels(path))
        if path.is_file() and path.suffix == ".keras":
            _check_keras_file(path)  # a file that is no model at all is said before its missing labels
            return _keras_classifier(path, read_labels(path.parent))
        if path.is_file() and path.suffix == ".tflite":
            return _tflite_classifier(path, read_labels(path.parent))
        raise ImgclsError(f"{path}: not a model imgcls can read; give {KINDS}")


def best_model_path(run: Path) -> Path:
    path = Path(run) / layout.MODEL
    if not path.is_file():
        raise ImgclsError(f"{run}: no {layout.MODEL} (the run kept no model: it did not finish an epoch, or its training "
                          "failed); train again or pick another run")
    return path


def _model_in_export_folder(path: Path) -> Path:
    """An export folder names its model (export.json's `model`); a folder holding one model file is that model."""
    if not path.is_dir() or (path / SAVED_MODEL_PB).is_file():
        return path
    if (path / EXPORT_INFO).is_file():
        try:
            return path / json.loads((path / EXPORT_INFO).read_text(encoding="utf-8"))["model"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ImgclsError(f"{path / EXPORT_INFO}: damaged ({first_line(exc, 120)}); export again") from None
    models = [p for p in path.iterdir() if p.is_file() and p.suffix in (".keras", ".tflite")]
    if len(models) == 1:
        return models[0]
    exports = sorted(p for p in path.iterdir() if (p / EXPORT_INFO).is_file())  # a run's export/ folder
    if len(exports) == 1:
        return _model_in_export_folder(exports[0])
    if exports:
        raise ImgclsError(f"{path} holds {len(exports)} exports ({', '.join(p.name for p in exports)}): "
                          f"give one of them, e.g. --model {exports[0]}")
    return path


def read_labels(folder: Path) -> list[str]:
    """Class names in output order: labels.txt, else export.json, else a run's classes.json."""
    folder = Path(folder)
    try:
        if (folder / LABELS).is_file():
            return [line for line in (folder / LABELS).read_text(encoding="utf-8").splitlines() if line]
        if (folder / EXPORT_INFO).is_file():
            return [str(name) for name in json.loads((folder / EXPORT_INFO).read_text(encoding="utf-8"))["classes"]]
    except (ValueError, KeyError, TypeError) as exc:  # not UTF-8, not JSON, no classes
        raise ImgclsError(f"{folder}: its {LABELS} or {EXPORT_INFO} is damaged ({first_line(exc, 120)}); "
                          "export again, or write the class names into labels.txt, one a line") from None
    if (folder / layout.CLASSES).is_file():
        return layout.read_classes(folder)
    raise ImgclsError(f"{folder.resolve()}: no {LABELS} beside the model; export with `imgcls export`, "
                      "or write the class names there, one a line, in output order")


def _tensorflow():
    from imgcls.runtime import import_tensorflow

    return import_tensorflow()


def load_keras(path: Path):
    """A .keras file loaded in safe mode (no code from the file is executed), as `inference_model` makes it.

    That is float32 and uncompiled whatever the file holds: a model saved
    under a mixed precision policy (by another tool, or by imgcls before
    best.keras was saved in float32) is converted here.
    """
    _tensorflow()
    import keras

    from imgcls.models import inference_model

    _check_keras_file(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # a damaged or foreign file: say which and why, without a traceback
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            raise ImgclsError(f"{path}: refused: the file carries Python code (a Lambda layer), which could run anything; "
                              "imgcls loads models in Keras safe mode only. Use a model without Lambda layers") from None
        raise ImgclsError(f"{path}: cannot load the model ({type(exc).__name__}: {first_line(exc)})") from None
    return inference_model(model)


def _check_keras_file(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise ImgclsError(f"{path}: not a .keras model file (damaged or cut short: a .keras file is a zip archive); "
                          "train or export it again")


def _keras_classifier(path: Path, class_names: list[str]) -> Classifier:
    model = load_keras(path)
    height, width, channels = _image_shape(model.input_shape, path)
    return Classifier(class_names, (height, width), channels,
                      lambda images: np.asarray(model.predict_on_batch(images.astype(np.float32))),
                      "keras", path, model, outputs=int(model.output_shape[-1]))


def _savedmodel_classifier(path: Path, class_names: list[str]) -> Classifier:
    tf = _tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures["serving_default"]
    except Exception as exc:
        raise ImgclsError(f"{path}: cannot load the SavedModel ({type(exc).__name__}: {first_line(exc)})") from None
    inputs = serve.structured_input_signature[1]
    if len(inputs) != 1:
        raise ImgclsError(f"{path}: serving_default takes {len(inputs)} inputs; imgcls needs one batch of images")
    [(name, spec)] = inputs.items()
    height, width, channels = _image_shape(spec.shape, path)

    def predict_batch(images: np.ndarray) -> np.ndarray:
        outputs = serve(**{name: tf.constant(images, dtype=spec.dtype)})
        return next(iter(outputs.values())).numpy()

    [output] = serve.structured_outputs.values() if len(serve.structured_outputs) == 1 else [None]
    units = int(output.shape[-1]) if output is not None and output.shape.rank and output.shape[-1] else None
    return Classifier(class_names, (height, width), channels, predict_batch, "savedmodel", path, loaded, outputs=units)


def model_needs_tensorflow(path: Path | None) -> bool:
    """Whether predicting with the model `--model` names imports TensorFlow: all but a .tflite where LiteRT is installed.

    Asked before the model is opened, so a TF-free predict never sets TF's devices up.
    """
    if path is None or not Path(path).exists():
        return True
    return _model_in_export_folder(Path(path)).suffix != ".tflite" or not _litert_installed()


def _litert_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("ai_edge_litert.interpreter") is not None
    except (ImportError, ValueError):  # a parent blocked (tests set sys.modules["ai_edge_litert"] = None)
        return False


def _tflite_classifier(path: Path, class_names: list[str]) -> Classifier:
    from imgcls.runtime import quiet_native_stderr

    try:
        with quiet_native_stderr():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." is noise
            interpreter = _tflite_interpreter()(model_path=str(path))
            interpreter.allocate_tensors()  # for the file's own batch size (1); other sizes reallocate below
    except Exception as exc:
        raise ImgclsError(f"{path}: cannot load the TFLite model ({type(exc).__name__}: {first_line(exc)})") from None
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    height, width, channels = _image_shape(source["shape"], path)

    def predict_batch(images: np.ndarray) -> np.ndarray:
        # The batch size is 1 in the file; the last batch is smaller than the others.
        if tuple(interpreter.get_input_details()[0]["shape"]) != images.shape:
            interpreter.resize_tensor_input(source["index"], images.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], _quantize(images, source))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(target["index"]), target)

    return Classifier(class_names, (height, width), channels, predict_batch, "tflite", path, interpreter,
                      outputs=int(target["shape"][-1]), needs_tensorflow=_is_tensorflows(interpreter))


def _is_tensorflows(interpreter) -> bool:
    return type(interpreter).__module__.startswith("tensorflow")


def _image_shape(shape, path: Path) -> tuple[int, int, int]:
    """(height, width, channels) of a model's [batch, h, w, c] input, which imgcls must know to resize images."""
    dims = list(shape)
    if len(dims) != 4 or any(d is None or int(d) < 1 for d in dims[1:]) or int(dims[3]) not in (1, 3):
        raise ImgclsError(f"{path}: input shape {dims} is not [batch, height, width, 1 or 3]; "
                          "imgcls predicts with image models of a fixed size")
    return int(dims[1]), int(dims[2]), int(dims[3])


def _tflite_interpreter():
    """The standalone LiteRT interpreter when installed, else TensorFlow's own (deprecated, still shipped)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        tf = _tensorflow()

        def interpreter(**kwargs):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
                return tf.lite.Interpreter(**kwargs)

        return interpreter


def _quantize(images: np.ndarray, detail: dict) -> np.ndarray:
    """Pixels in the input's dtype: int8 models carry a scale and zero point."""
    scale, zero_point = detail["quantization"]
    dtype = detail["dtype"]
    if not scale:
        return images.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    values = values.astype(np.float32)
    return (values - zero_point) * scale if scale else values
