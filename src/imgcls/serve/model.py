"""ServedModel: the model a server holds, with its preprocessing, warm-up, metadata and Grad-CAM.

Loaded once, before the port opens: a model that does not load is a one-line
error and nothing listens. Uploads are decoded by the model's own
preprocessing: `data.pipeline.decode_image` (what training used) for a Keras
model or a SavedModel, its TensorFlow-free twin for a .tflite model run by
LiteRT, so the server never imports TensorFlow for one.
"""

from __future__ import annotations

import base64
import io
import re
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from imgcls.infer.classifier import Classifier


@dataclass
class ServedModel:
    classifier: Classifier
    name: str
    run: Path | None = None
    decode: Callable[[bytes], np.ndarray] | None = None  # encoded image -> uint8 [h, w, c]; default: the model's own
    warmup_seconds: float = 0.0
    _gradcam: Any = field(default=None, repr=False)

    def __post_init__(self):
        if self.decode is None:
            self.decode = preprocessing(self.classifier)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.classifier.image_size, self.classifier.channels)

    @property
    def can_explain(self) -> bool:
        """Grad-CAM needs gradients: a Keras model (a run's best.keras or a .keras file)."""
        return self.classifier.kind == "keras"

    def warm_up(self, max_batch: int) -> None:
        """One pass of the preprocessing and of every batch size the batcher makes, so no request is the first of
        its size (slow) and the model's memory is all taken before the port opens."""
        started = time.perf_counter()
        self.decode(_blank_png(self.classifier.image_size, self.classifier.channels))
        from imgcls.serve.batcher import batch_sizes

        for size in batch_sizes(max_batch):
            self.classifier.predict_batch(np.zeros((size, *self.input_shape), np.uint8))
        self.warmup_seconds = time.perf_counter() - started

    def metadata(self) -> dict:
        c = self.classifier
        return {
            "model": self.name, "classes": c.class_names, "kind": c.kind, "source": str(c.source),
            "run": str(self.run) if self.run else None,
            "input": {"height": c.image_size[0], "width": c.image_size[1], "channels": c.channels, "dtype": "uint8",
                      "pixels": "0-255, the model rescales them itself"},
            "outputs": c.outputs, "explain": self.can_explain,
            "versions": _versions(c.needs_tensorflow),
        }

    def explain(self, image: np.ndarray) -> dict:
        """Grad-CAM of the predicted class for one uint8 image: its heatmap as a PNG (jet colours, see-through),
        to lay over the image at any size."""
        from imgcls.infer.explain import GradCam

        if self._gradcam is None:
            self._gradcam = GradCam(self.classifier.model)
        probabilities, heatmaps = self._gradcam(image[None])
        return {"probabilities": probabilities[0], "heatmap": heatmap_png(heatmaps[0])}


def preprocessing(classifier: Classifier) -> Callable[[bytes], np.ndarray]:
    """The model's preprocessing of encoded bytes: `decode_image` compiled once, or its TensorFlow-free twin."""
    size, channels = classifier.image_size, classifier.channels
    if not classifier.needs_tensorflow:
        from imgcls.data.lite_image import decode_image_lite

        return lambda contents: decode_image_lite(contents, size, channels)
    from imgcls.data.pipeline import decode_image
    from imgcls.runtime import import_tensorflow

    tf = import_tensorflow()
    decode = tf.function(lambda contents: decode_image(contents, size, channels),
                         input_signature=[tf.TensorSpec([], tf.string)])
    return lambda contents: decode(tf.constant(contents)).numpy()


def heatmap_png(heatmap: np.ndarray) -> str:
    """A heatmap (0-1) as a data: URL of an RGBA PNG: jet colours, more opaque where the model looked more."""
    from matplotlib import colormaps
    from PIL import Image

    rgba = colormaps["jet"](heatmap)
    rgba[..., 3] = 0.25 + 0.5 * heatmap
    buffer = io.BytesIO()
    Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _blank_png(size: tuple[int, int], channels: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L" if channels == 1 else "RGB", (size[1], size[0])).save(buffer, format="PNG")
    return buffer.getvalue()


def _versions(needs_tensorflow: bool) -> dict:
    """imgcls and what runs the model: TensorFlow and Keras, or LiteRT alone."""
    runtimes = ("tensorflow", "keras") if needs_tensorflow else ("ai-edge-litert",)
    return {package: _version(package) for package in ("imgcls", *runtimes)}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def open_model(run: Path | None, model: Path | None, name: str | None = None) -> ServedModel:
    """The ServedModel of a run folder or of a model file / export folder (TensorFlow set up by the caller)."""
    if model is not None:
        classifier = Classifier.from_path(model)
        folder = model if model.is_dir() else model.parent  # an export folder (or a SavedModel) names the model
        return ServedModel(classifier, name or _model_name(folder.resolve().name), run=None)
    classifier = Classifier.from_run(run)
    # runs/digits-20261207-174034 serves as "digits": a TF Serving client's URL outlives one run
    default = re.sub(r"-\d{8}-\d{6}(-\d+)?$", "", run.resolve().name)
    return ServedModel(classifier, name or _model_name(default), run=run.resolve())


def _model_name(text: str) -> str:
    """A name that fits in a URL path segment (/v1/models/<name>:predict)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.")
    return cleaned or "model"
