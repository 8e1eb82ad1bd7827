"""Predict: class probabilities for image files, from a run or an exported model.

Files are checked once and, when TensorFlow needs it, converted by the same
scan as training data (imgcls.data.scan); then they go through
`imgcls.data.pipeline.load_image` (the training preprocessing, not a copy), in
batches, with one model load per call; a .tflite model on LiteRT gets the same
pixels from `imgcls.data.lite_image` (its TF-free twin, pinned to it by tests). The model is a `Classifier`, so a run's best.keras, a
SavedModel and a TFLite file all take the same path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from imgcls.infer.classifier import Classifier, best_model_path, load_keras
from imgcls.data.scan import ScannedFile, scan_files
from imgcls.errors import ImgclsError
from imgcls.files import write_csv
from imgcls.run import layout


def _one_field(text: str) -> str:
    """A path or class name as one tab-separated field: a tab or line break in it is written as \\t, \\n."""
    return str(text).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@dataclass
class Prediction:
    path: str
    label: str
    confidence: float
    top_k: list[dict[str, float | str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "confidence": self.confidence, "top_k": self.top_k}

    def line(self) -> str:
        """path, label and confidence, tab-separated, then the other top-k labels in brackets."""
        others = "  ".join(f"{_one_field(t['label'])} {t['confidence']:.3f}" for t in self.top_k[1:])
        return f"{_one_field(self.path)}\t{_one_field(self.label)}\t{self.confidence:.3f}" + (f"\t({others})" if others else "")


def collect_images(paths: list[Path], warn: Callable[[str], None] | None = None) -> list[ScannedFile]:
    """The image files `paths` names, each checked once by content: files as given, folders searched recursively.

    A named file that is not a readable image is an error; in a folder, files
    that are not images (and hidden ones) are ignored and bad images are
    skipped, each named through `warn`.
    """
    candidates: list[tuple[Path, Path | None]] = []  # (file, the folder it was found in, or None if named)
    for path in map(Path, paths):
        if path.is_dir():
            candidates += [(p, path) for p in sorted(path.rglob("*"))
                           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        elif path.is_file():
            candidates.append((path, None))
        else:
            raise ImgclsError(f"{path}: " + ("not a regular file (a pipe, socket or device)" if path.exists()
                                              else "no such file or folder"))
    scanned, _ = scan_files([file for file, _ in candidates])
    images, found_in = [], set()
    for (file, folder), found in zip(candidates, scanned):
        if found.is_image:
            images.append(found)
            found_in.add(folder)
        elif folder is None:
            reason = "not an image file (imgcls reads JPEG, PNG, BMP, GIF, WebP and TIFF)" if found.check.kind == "other" else found.problem
            raise ImgclsError(f"{file}: {reason}; remove it or pass other files")
        elif found.check.kind == "bad" and warn is not None:
            warn(f"skipped {file}: {found.problem}")
    for path in map(Path, paths):
        if path.is_dir() and path not in found_in:
            raise ImgclsError(f"{path}: no images in this folder")
    return images


def load_model(run: Path):
    """The run's best.keras, loaded in safe mode (no code from the file is executed), float32."""
    return load_keras(best_model_path(run))


def predict_files(source: Path | Classifier, paths: list[Path], top_k: int = 1, tta: bool = False) -> list[Prediction]:
    """Predictions for image files and folders (see `collect_images`) with a run folder or an opened `Classifier`."""
    return predict_images(source, collect_images(paths), top_k, tta)


def predict_images(source: Path | Classifier, images: list[ScannedFile], top_k: int = 1,
                   tta: bool = False, run: Path | None = None) -> list[Prediction]:
    """Predictions for images `collect_images` found, with a run folder or an opened `Classifier` (e.g. an export).

    `tta`: average over the image and its mirror images (`tta_flips`: those `run`, or the run `source`, trained with).
    """
    classifier = source if isinstance(source, Classifier) else Classifier.from_run(source)
    flips = tta_flips(run if isinstance(source, Classifier) else source) if tta else ()
    probabilities = class_probabilities(classifier, [image.readable for image in images], flips=flips)
    return to_predictions([image.path for image in images], probabilities, classifier.class_names, top_k)


# Test-time augmentation: the image axes (of a [n, h, w, c] batch) each flip of data.augment_flip mirrors.
FLIP_AXES = {"horizontal": (2,), "vertical": (1,), "horizontal_and_vertical": (2, 1)}


def tta_flips(run: Path | None) -> tuple[int, ...]:
    """The mirror images --tta adds: those the run trained with (a horizontal one for a model without its run)."""
    if run is None:
        return FLIP_AXES["horizontal"]
    data = layout.read_config(run)["data"]
    flip = data.get("augment_flip", "horizontal")
    if data.get("augment", "none") == "none":
        raise ImgclsError(f"--tta averages over mirrored images, but {run} trained without any (data.augment: none): "
                          "its model never learned that a mirror image is the same class; leave out --tta")
    if flip not in FLIP_AXES:
        raise ImgclsError(f"--tta averages over mirrored images, but {run} trained with data.augment_flip: {flip} (a "
                          "mirrored image may be another class, as with digits); leave out --tta")
    return FLIP_AXES[flip]


def _predict_batch(classifier: Classifier, batch: np.ndarray, flips: tuple[int, ...]) -> np.ndarray:
    outputs = classifier.predict_batch(batch)
    for axis in flips:
        outputs = outputs + classifier.predict_batch(np.ascontiguousarray(np.flip(batch, axis=axis)))
    return outputs / (1 + len(flips))


def class_probabilities(classifier: Classifier, readable: list[str], batch_size: int = 32,
                        flips: tuple[int, ...] = ()) -> np.ndarray:
    """The classifier's outputs for checked image files (their `readable` paths), batch by batch.

    The one batched prediction path: predict, evaluate and export's check all
    come here. 32 a batch: measured faster than 64 on a 2-core CPU
    (docs/benchmarks.md, "Predict"). `flips`: image axes to mirror; the
    outputs are averaged over the image and each mirror image (test-time
    augmentation).
    """
    try:
        probabilities = np.concatenate([_predict_batch(classifier, batch, flips)
                                        for batch in _image_batches(classifier, readable, batch_size)])
    except Exception as exc:
        problem = _unreadable_image(classifier, exc, readable)
        if problem is None:
            raise
        raise ImgclsError(f"an image could not be read ({problem}); it changed after it was checked: restore it, or "
                          "leave it out") from None
    broken = ~np.isfinite(probabilities).all(axis=1)
    if broken.any():
        raise ImgclsError(f"{classifier.source}: the model gives NaN or infinite outputs (first for {readable[int(broken.argmax())]}): "
                          "its weights are broken, as when training diverged; train it again with a lower learning rate")
    return probabilities


def _image_batches(classifier: Classifier, readable: list[str], batch_size: int):
    """TF's pipeline, or its NumPy twin (data.lite_image, held to it by tests) for a model that runs without TF."""
    if classifier.needs_tensorflow:
        from imgcls.data.pipeline import image_batches
    else:
        from imgcls.data.lite_image import image_batches_lite as image_batches
    return image_batches(readable, classifier.image_size, classifier.channels, batch_size)


def _unreadable_image(classifier: Classifier, exc: BaseException, readable: list[str]) -> str | None:
    if classifier.needs_tensorflow:
        from imgcls.data.pipeline import unreadable_image

        return unreadable_image(exc, readable)
    # Pillow's errors and a vanished file are OSErrors, which name the file or are named here.
    if not isinstance(exc, OSError):
        return None
    return f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)


def as_class_probabilities(probs: np.ndarray) -> np.ndarray:
    """One probability per class: a single sigmoid output becomes two columns."""
    probs = np.asarray(probs, dtype=np.float64)
    return np.concatenate([1 - probs, probs], axis=1) if probs.shape[1] == 1 else probs


def to_predictions(files, probs: np.ndarray, class_names: list[str], top_k: int) -> list[Prediction]:
    """Turn model outputs into labelled predictions; a single sigmoid output becomes two class probabilities."""
    probs = as_class_probabilities(probs)
    k = max(1, min(top_k, len(class_names)))
    results = []
    for path, p in zip(files, probs):
        order = np.argsort(-p)[:k]
        results.append(Prediction(
            path=str(path), label=class_names[order[0]], confidence=round(float(p[order[0]]), 6),
            top_k=[{"label": class_names[i], "confidence": round(float(p[i]), 6)} for i in order],
        ))
    return results


def write_predictions_csv(path: Path, predictions: list[Prediction]) -> None:
    """path, label, confidence, then label_2, confidence_2, ... for the other top-k labels."""
    k = max(len(p.top_k) for p in predictions)
    rows = [{"path": p.path, "label": p.label, "confidence": p.confidence,
             **{f"{what}_{i}": t[what] for i, t in enumerate(p.top_k[1:], start=2) for what in ("label", "confidence")}}
            for p in predictions]
    columns = ["path", "label", "confidence"] + [f"{what}_{i}" for i in range(2, k + 1) for what in ("label", "confidence")]
    write_csv(path, [{column: row.get(column, "") for column in columns} for row in rows])
