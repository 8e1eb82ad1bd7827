"""imgcls from Python: what the commands do, as calls a notebook makes.

    import imgcls
    run = imgcls.train("configs/digits.yaml", epochs=3)          # or a dict, or a Config; any key as "data.batch_size"
    run.history, run.metrics, run.plot()                         # per-epoch rows, metrics.json, a matplotlib Figure
    run.predict(["a.jpg", "folder/"], top_k=3)                   # the rows of `imgcls predict --json`
    run.evaluate(split="val")                                    # eval.json, as `imgcls evaluate --json`
    run.export("tflite", quantize="int8")                        # the export folder
    imgcls.load_run("runs/latest"); imgcls.runs("runs")

Every call goes through the same code as the command line (the CLI is a thin
layer over the same functions), so the validation, the files a run writes and
the numbers are the same. A user error raises `ImgclsError` (a config's:
`ConfigError`) with the same one line the CLI prints. Nothing here imports
TensorFlow until a call needs it, so `import imgcls` stays instant.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError

# Keywords for the overrides people set most; any other key goes in as a dotted keyword: **{"data.seed": 7}.
COMMON_KEYS = {"epochs": "train.epochs", "batch_size": "data.batch_size", "image_size": "data.image_size",
               "learning_rate": "train.learning_rate"}


def train(config: str | Path | dict | Any = None, *, epochs: int | None = None, batch_size: int | None = None,
          image_size: int | list[int] | None = None, learning_rate: float | None = None, runs_dir: str | Path = "runs",
          name: str | None = None, resume: bool = False, force: bool = False, callbacks: list = (),
          **overrides: Any) -> Run:
    """Train a config (a YAML path, a dict as the YAML would be, or a `Config`) into a new run folder; return the Run.

    `resume=True` continues the run `config` names (default runs_dir/latest),
    as `imgcls train --resume`. An interrupt (Ctrl-C, the kernel's stop
    button) ends the run cleanly: the Run comes back with status
    "interrupted", its files kept, ready to `resume`.
    """
    from imgcls.launch import launch_training

    _check_train_arguments(config, resume, overrides)
    callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    common = {COMMON_KEYS[key]: value for key, value in
              {"epochs": epochs, "batch_size": batch_size, "image_size": image_size, "learning_rate": learning_rate}.items()
              if value is not None}
    settings = [f"{key}={json.dumps(_plain(value))}" for key, value in {**common, **overrides}.items()]
    result = launch_training(config, settings, runs_dir=runs_dir, name=name,
                             resume=resume, force=force, callbacks=callbacks, command="imgcls.train(...)")
    if result is None:  # resume: the run had already ended; the log said so
        from imgcls.run.layout import resolve_run

        return Run(resolve_run(config, runs_dir))
    return Run(result[0])


def _check_train_arguments(config: Any, resume: bool, overrides: dict[str, Any]) -> None:
    """Python-side mistakes the config cannot see: the config's type, and a keyword that is not a setting."""
    from imgcls.errors import ConfigError, did_you_mean

    if resume and config is not None and not isinstance(config, (str, Path)):
        raise ImgclsError("resume=True continues a run: give its folder (or nothing, for runs/latest), not a config")
    if not resume and not isinstance(config, (str, Path, dict)) and type(config).__name__ != "Config":
        raise ConfigError(f"config: give a YAML file's path, a dict shaped like the YAML, or a Config "
                          f"(got {type(config).__name__})")
    for key in overrides:
        if "." not in key:
            hint = did_you_mean(key, [*COMMON_KEYS, "runs_dir", "name", "resume", "force", "callbacks"])
            raise ConfigError(f"{key}=: not a keyword of imgcls.train; {hint + ' ' if hint else ''}other settings go "
                              "in as dotted keys, e.g. **{'train.epochs': 3}")


def load_run(path: str | Path | None = None, runs_dir: str | Path = "runs") -> Run:
    """A finished, stopped or interrupted run (default runs_dir/latest; a name is looked up in runs_dir too),
    to read, plot, predict, evaluate or export."""
    from imgcls.run.layout import resolve_run

    if path is not None and not Path(path).exists() and (Path(runs_dir) / path).exists():
        path = Path(runs_dir) / path
    return Run(resolve_run(path, runs_dir))


def runs(runs_dir: str | Path = "runs") -> list[dict[str, Any]]:
    """Every run in `runs_dir`, newest last: the rows of `imgcls runs --json`."""
    from imgcls.run.status import describe_runs

    return describe_runs(Path(runs_dir))


@dataclass
class Run:
    """A run folder and what can be done with it."""

    path: Path
    _model: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        from imgcls.run.layout import resolve_run

        self.path = resolve_run(Path(self.path))  # absolute, and a run folder: a later chdir changes nothing

    def __repr__(self) -> str:
        best = self.best
        shown = f", best val_accuracy {best['val_accuracy']:.4f} (epoch {int(best['epoch'])})" \
            if best and "val_accuracy" in best else ""
        return f"Run('{_shown(self.path)}', {self.status}{shown})"

    # ------------------------------------------------------------------ what the run wrote

    @property
    def status(self) -> str:
        """running | finished | stopped_early | time_limit | interrupted | failed | died."""
        from imgcls.run.status import run_status

        return run_status(self.path)

    @property
    def history(self) -> list[dict[str, float]]:
        """One dict per completed epoch: the rows of history.csv."""
        from imgcls.run import layout

        return layout.read_history(self.path) if (self.path / layout.HISTORY_CSV).is_file() else []

    @property
    def metrics(self) -> dict[str, Any] | None:
        """metrics.json (None while the run trains, or when its process died before the end)."""
        from imgcls.run.layout import read_metrics

        return read_metrics(self.path)

    @property
    def best(self) -> dict[str, float] | None:
        """The history row of the epoch best.keras holds."""
        from imgcls.run.status import best_epoch

        return best_epoch(self.path)

    @property
    def classes(self) -> list[str]:
        from imgcls.run.layout import read_classes

        return read_classes(self.path)

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config.yaml, as a dict."""
        from imgcls.run.layout import read_config

        return read_config(self.path)

    @property
    def model(self):
        """The keras.Model of best.keras (loaded once, in safe mode)."""
        if self._model is None:
            from imgcls.infer.predict import load_model
            from imgcls.runtime import import_tensorflow

            import_tensorflow()
            self._model = load_model(self.path)
        return self._model

    # ------------------------------------------------------------------ what the commands do

    def plot(self):
        """Accuracy, loss and learning rate per epoch, best epoch marked: a matplotlib Figure (shows inline in
        Jupyter; `.savefig("curves.png")` elsewhere)."""
        import matplotlib.pyplot as plt

        from imgcls.plots import history_figure

        figure = history_figure([self.path])
        plt.close(figure)  # shown once, as the call's value, not again by pyplot at the end of the cell
        return figure

    def predict(self, images: Any, top_k: int = 1, tta: bool = False) -> list[dict[str, Any]]:
        """Predictions for image files and folders (searched recursively), numpy arrays (H x W x C, or a batch
        of them, 0-255) or PIL images: the rows of `imgcls predict --json` (path, label, confidence, top_k)."""
        return _predict(lambda: self.path, images, top_k, tta)

    def evaluate(self, split: str = "val", data: str | Path | None = None, tta: bool = False) -> dict[str, Any]:
        """Accuracy, top-k, loss, per-class figures and confusion matrix of best.keras on the run's `split`
        (val or test) or any labelled folder `data`; writes eval.json and the plots, as `imgcls evaluate`."""
        from imgcls.infer.evaluate import compute_evaluation, write_evaluation
        from imgcls.runtime import import_tensorflow

        import_tensorflow()
        evaluation = compute_evaluation(self.path, split, Path(data) if data is not None else None, tta=tta)
        write_evaluation(evaluation)
        return evaluation.result

    def export(self, format: str = "savedmodel", quantize: str = "none", out: str | Path | None = None) -> Path:
        """Export best.keras (savedmodel | tflite | keras; quantize none | dynamic | float16 | int8), checked against
        it on validation images; returns the export folder, as `imgcls export`."""
        from imgcls.infer.export import default_target, export_run
        from imgcls.runtime import import_tensorflow

        import_tensorflow()
        target = Path(out) if out is not None else default_target(self.path, format, quantize)
        export_run(self.path, format, quantize, target, log=lambda message: None)
        return target


def predict(images: Any, model: str | Path, top_k: int = 1) -> list[dict[str, Any]]:
    """Predictions with an exported model (the folder `Run.export` returns, or its .keras, SavedModel or .tflite
    with labels.txt beside it), as `imgcls predict --model`: the same rows as `Run.predict`."""
    from imgcls.infer.classifier import Classifier

    if not isinstance(model, (str, Path)):
        raise ImgclsError(f"model: give the export folder or a model file's path (got {type(model).__name__})")
    return _predict(lambda: Classifier.from_path(Path(model)), images, top_k, False)  # finds an export folder's model


def _predict(source, images: Any, top_k: int, tta: bool) -> list[dict[str, Any]]:
    """`source()`: the run folder or the opened model, asked for only once the images are known to be good."""
    from imgcls.infer.predict import collect_images, predict_images
    from imgcls.runtime import import_tensorflow

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ImgclsError(f"top_k: a whole number of at least 1 (got {top_k!r})")
    with tempfile.TemporaryDirectory(prefix="imgcls-predict-") as scratch:
        paths, names = _as_files(images, Path(scratch))
        found = collect_images(paths, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
        if not found:
            return []
        import_tensorflow()
        predictions = predict_images(source(), found, top_k=top_k, tta=tta)
    rows = [p.to_dict() for p in predictions]
    for row in rows:
        row["path"] = names.get(row["path"], row["path"])
    return rows


def _shown(path: Path) -> str:
    """A path as short as it can be said: relative to the working folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _plain(value: Any) -> Any:
    """A value as YAML can write it: paths as strings, tuples and arrays as lists, NumPy numbers as numbers."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":  # np.int64(3), np.arange(3)
        return value.tolist()
    return value


def _as_files(images: Any, scratch: Path) -> tuple[list[Path], dict[str, str]]:
    """Paths for `images`: paths as they are; arrays and PIL images written as PNG (lossless), so they take the
    one preprocessing path files take. Also {written file: the name to report, e.g. "array[0]"}."""
    if images is None or isinstance(images, (dict, bytes)):
        raise ImgclsError(f"images: give a path, a folder, an array, a PIL image or a list of them "
                          f"(got {type(images).__name__})")
    single = isinstance(images, (str, Path)) or hasattr(images, "__array__") or hasattr(images, "getpixel")
    items = [images] if single else list(images)  # a list, tuple or generator of images
    paths, names = [], {}
    for i, item in enumerate(_unbatched(items)):
        if isinstance(item, (str, Path)):
            paths.append(Path(item))
            continue
        image, what = _as_pil(item, i)
        path = scratch / f"{i:06d}.png"
        image.save(path)
        paths.append(path)
        names[str(path)] = what
    return paths, names


def _unbatched(items: list) -> list:
    import numpy as np

    flat = []
    for item in items:
        if isinstance(item, np.ndarray) and item.ndim == 4:
            flat += list(item)
        else:
            flat.append(item)
    return flat


def _as_pil(item: Any, index: int):
    import numpy as np
    from PIL import Image

    if isinstance(item, Image.Image):
        if item.mode in ("I", "I;16", "F"):  # 32-bit or 16-bit pixels: checked as the array they are
            return _as_pil(np.asarray(item), index)[0], f"image[{index}]"
        if item.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV: PNG cannot hold them
            item = item.convert("RGB")
        return item, f"image[{index}]"
    if not hasattr(item, "__array__"):
        raise ImgclsError(f"images[{index}]: a {type(item).__name__} is not an image; give a path, an array or a PIL image")
    array = np.asarray(item)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImgclsError(f"images[{index}]: an array of shape {array.shape} is not an image; give H x W, H x W x 3 "
                          "(or 1, or 4) values 0-255, or a batch N x H x W x C")
    if array.dtype != np.uint8:
        if array.size and not np.isfinite(array).all():
            raise ImgclsError(f"images[{index}]: NaN or infinite values; give pixels 0-255")
        fractions = np.issubdtype(array.dtype, np.floating) and bool(np.any(array % 1))
        if array.size and fractions and 0 <= array.min() and array.max() <= 1:
            raise ImgclsError(f"images[{index}]: float values 0 to 1; give raw pixels 0-255 (multiply by 255): the "
                              "model scales them itself, as in training")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImgclsError(f"images[{index}]: values {array.min():g} to {array.max():g}; give raw pixels 0-255 "
                              "(the model scales them itself)")
        array = np.round(array).astype(np.uint8)
    return Image.fromarray(array), f"array[{index}]"
