"""Where the model looks: Grad-CAM (Selvaraju et al. 2017) of a Keras classifier, for any registered model.

    cam = GradCam(model)                      the last convolutional feature map (or GradCam(model, layer="name"))
    probs, heatmaps = cam(batch)              uint8 images [n, h, w, c] -> probabilities, heatmaps [n, h, w] in 0-1
    focus(heatmap)                            its peak (x, y) and the share of its mass in each ninth of the image

The gradient of the explained class's probability with respect to the
feature map, averaged over its positions, weighs each channel; the weighted
sum, through a ReLU, is the map of what raised that class. It is computed
with `tf.GradientTape` on the model as saved (float32, as `inference_model`
leaves it), from images decoded by the one `load_image`, and upsampled to
the input size. A backbone's last feature map is the output of its nested
keras.applications model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imgcls.errors import ImgclsError

FEATURE_MAP_LAYERS = ("Conv", "Activation", "ReLU", "BatchNormalization", "Functional", "Model", "Sequential",
                      "LeakyReLU", "ELU")  # layers whose 4-D output can be the map; pooling and dropout are skipped


def feature_layers(model) -> list[str]:
    """The names of the outer layers whose output is a spatial feature map (rank 4, after the input)."""
    return [layer.name for layer in model.layers[1:]
            if len(_output_in(layer).shape) == 4 and any(kind in type(layer).__name__ for kind in FEATURE_MAP_LAYERS)]


def _output_in(layer):
    """The layer's output in the model that calls it. A nested model (a keras.applications backbone) has two
    nodes: its own graph's and the call in the outer model, the last one; its `.output` is its own graph's."""
    return layer._inbound_nodes[-1].output_tensors[0]


def default_layer(model) -> str:
    """The last feature map before the head: the last convolution block's output (a backbone's own output)."""
    names = [name for name in feature_layers(model) if name != "rescaling"]
    if not names:
        raise ImgclsError(f"{model.name}: no convolutional layer, so there is no feature map for Grad-CAM; explain "
                          "needs a CNN (every registered model is one)")
    return names[-1]


class GradCam:
    """Grad-CAM of `model` (a Keras classifier ending in softmax or one sigmoid) at `layer` (default: `default_layer`)."""

    def __init__(self, model, layer: str | None = None):
        import keras

        known = feature_layers(model)
        self.layer = layer or default_layer(model)
        if self.layer not in known:
            raise ImgclsError(f"--layer {self.layer}: not a feature map of {model.name}; its feature maps are "
                              f"{', '.join(known)}")
        height, width = _output_in(model.get_layer(self.layer)).shape[1:3]
        if height == 1 and width == 1:
            raise ImgclsError(f"{self.layer}: its feature map is 1x1 at this image size, so there is nothing to locate; "
                              "train at a larger data.image_size (or name a larger map with --layer)")
        self.binary = model.outputs[0].shape[-1] == 1
        self._model = keras.Model(model.inputs, [_output_in(model.get_layer(self.layer)), model.outputs[0]])

    def __call__(self, batch: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [n, classes] and heatmaps [n, h, w] (0-1, the input's size) of the predicted class,
        or of `class_index` for every image."""
        from imgcls.runtime import import_tensorflow

        tf = import_tensorflow()
        images = tf.convert_to_tensor(batch, dtype=tf.float32)
        with tf.GradientTape() as tape:
            features, outputs = self._model(images, training=False)
            probs = tf.concat([1 - outputs, outputs], axis=1) if self.binary else outputs
            chosen = (tf.argmax(probs, axis=1) if class_index is None
                      else tf.fill([tf.shape(probs)[0]], tf.constant(class_index, tf.int64)))
            score = tf.gather(probs, chosen, batch_dims=1)
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        maps = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        maps = tf.image.resize(maps[..., None], batch.shape[1:3], method="bilinear")[..., 0]
        peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
        maps = tf.math.divide_no_nan(maps, peak)
        return probs.numpy(), maps.numpy()


@dataclass
class Focus:
    """Where a heatmap points: its peak in input pixels and its mass in a 3 x 3 grid of the image."""

    peak: tuple[int, int] | None  # (x, y); None for an empty map (no evidence for the class anywhere)
    grid: list[list[float]] | None  # rows top to bottom, columns left to right; sums to 1

    def to_dict(self) -> dict[str, Any]:
        if self.peak is None:
            return {"empty": True, "peak": None, "mass_grid": None, "mass_centre": None, "mass_border": None}
        return {"empty": False, "peak": {"x": self.peak[0], "y": self.peak[1]}, "mass_grid": self.grid,
                "mass_centre": round(self.grid[1][1], 4), "mass_border": round(1 - self.grid[1][1], 4)}


def focus(heatmap: np.ndarray) -> Focus:
    if not heatmap.max() > 0:
        return Focus(None, None)
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    total = float(heatmap.sum()) or 1.0
    rows = np.array_split(np.arange(heatmap.shape[0]), 3)
    cols = np.array_split(np.arange(heatmap.shape[1]), 3)
    grid = [[round(float(heatmap[np.ix_(r, c)].sum()) / total, 4) for c in cols] for r in rows]
    return Focus((int(x), int(y)), grid)


def explain_files(source, paths: list, out, class_name: str | None = None, layer: str | None = None,
                  alpha: float = 0.4, top_k: int = 3, batch_size: int = 16, warn=None) -> list[dict[str, Any]]:
    """Grad-CAM of each image `paths` names (folders searched recursively), one PNG each into `out`.

    `source`: a run folder, or a .keras model file (labels.txt beside it). Returns, per image, the
    prediction, the explained class, where the heatmap points and the PNG written.
    """
    from pathlib import Path

    from imgcls.data.pipeline import image_batches
    from imgcls.infer.predict import collect_images
    from imgcls.plots import plot_explanation

    images = collect_images(paths, warn=warn)  # a wrong path answers before the model loads
    classifier = _keras_classifier(source)
    class_index = None
    if class_name is not None:
        if class_name not in classifier.class_names:
            raise ImgclsError(f"--class {class_name}: not a class of the model; its classes are "
                              + ", ".join(repr(name) if " " in name or "," in name else name
                                          for name in classifier.class_names))
        class_index = classifier.class_names.index(class_name)
    cam = GradCam(classifier.model, layer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    results = []
    readable = [image.readable for image in images]
    batches = image_batches(readable, classifier.image_size, classifier.channels, batch_size)
    start = 0
    for batch in batches:
        probs, maps = cam(batch, class_index)
        for offset, (pixels, p, heatmap) in enumerate(zip(batch, probs, maps)):
            original = images[start + offset].path
            order = np.argsort(-p)[:top_k]
            top = [{"label": classifier.class_names[i], "confidence": round(float(p[i]), 6)} for i in order]
            explained = class_name or top[0]["label"]
            png = out / _unique_name(Path(original).stem, names)
            where = focus(heatmap).to_dict()
            what = f"no evidence for {explained}" if where["empty"] else f"Grad-CAM of {explained}"
            title = "  ".join(f"{t['label']} {t['confidence']:.2f}" for t in top) + f"   ({what})"
            plot_explanation(pixels, heatmap, title, png, alpha)
            results.append({"path": str(original), "label": top[0]["label"], "confidence": top[0]["confidence"],
                            "top_k": top, "explained": explained, **where,
                            "input_size": {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
                            "png": str(png)})
        start += len(batch)
    return results


def _keras_classifier(source):
    from pathlib import Path

    from imgcls.infer.classifier import Classifier

    source = Path(source)
    classifier = Classifier.from_path(source) if source.is_file() or not (source / "config.yaml").is_file() \
        else Classifier.from_run(source)
    if classifier.kind != "keras":
        raise ImgclsError(f"{classifier.source}: a {classifier.kind} model has no gradients to explain; give the run "
                          "(--run) or its .keras file (--model best.keras)")
    return classifier


def _unique_name(stem: str, taken: set[str]) -> str:
    name, n = f"{stem}_cam.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}_cam.png"
    taken.add(name)
    return name
