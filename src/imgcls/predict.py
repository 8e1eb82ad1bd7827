"""Predict: class probabilities for image files, from a run's best.keras.

Images go through `imgcls.data.load_image` (the training preprocessing, not a
copy), in batches via tf.data, with one model load per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls import runs
from imgcls.data import images_dataset, is_image_file
from imgcls.errors import ImgclsError
from imgcls.scan import check_image


@dataclass
class Prediction:
    path: str
    label: str
    confidence: float
    top_k: list[dict[str, float | str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "confidence": self.confidence, "top_k": self.top_k}


def collect_images(paths: list[Path]) -> list[Path]:
    """Image files named by `paths`: files as given, folders searched recursively."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise ImgclsError(f"{path}: no images in this folder")
            files += found
        elif path.is_file():
            if not is_image_file(path):
                raise ImgclsError(f"{path}: not an image file (imgcls reads .jpg, .jpeg, .png, .bmp, .gif)")
            files.append(path)
        else:
            raise ImgclsError(f"{path}: no such file or folder")
    for file in files:
        problem = check_image(file)
        if problem:
            raise ImgclsError(f"{file}: {problem}; remove it or pass other files")
    return files


def load_model(run: Path):
    """The run's best.keras, loaded in safe mode (no code from the file is executed)."""
    path = Path(run) / runs.MODEL
    if not path.is_file():
        raise ImgclsError(f"{run}: no {runs.MODEL} (the run did not finish an epoch); train again or pick another run")
    from imgcls.runtime import import_tensorflow

    import_tensorflow()
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # a damaged or foreign file: say which and why, without a traceback
        raise ImgclsError(f"{path}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def predict_files(run: Path, files: list[Path], top_k: int = 1, batch_size: int = 64) -> list[Prediction]:
    config = runs.read_config(run)
    class_names = runs.read_classes(run)
    model = load_model(run)
    data = config["data"]
    channels = 3 if data["color_mode"] == "rgb" else 1
    ds = images_dataset([str(f) for f in files], tuple(data["image_size"]), channels)
    import tensorflow as tf

    ds = ds.batch(batch_size).map(lambda x: tf.cast(x, tf.float32)).prefetch(tf.data.AUTOTUNE)
    probs = np.concatenate([model.predict_on_batch(batch) for batch in ds])
    return to_predictions(files, probs, class_names, top_k)


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """One probability per class: a single sigmoid output (label_mode binary) becomes two."""
    probs = np.asarray(outputs, dtype=np.float64)
    return np.concatenate([1 - probs, probs], axis=1) if probs.shape[1] == 1 else probs


def to_predictions(files, probs: np.ndarray, class_names: list[str], top_k: int) -> list[Prediction]:
    """Turn model outputs into labelled predictions."""
    probs = class_probabilities(probs)
    k = max(1, min(top_k, len(class_names)))
    results = []
    for path, p in zip(files, probs):
        order = np.argsort(-p)[:k]
        results.append(Prediction(
            path=str(path), label=class_names[order[0]], confidence=round(float(p[order[0]]), 6),
            top_k=[{"label": class_names[i], "confidence": round(float(p[i]), 6)} for i in order],
        ))
    return results
