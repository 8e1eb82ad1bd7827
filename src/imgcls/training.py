"""Training: one straight path from a validated config to a finished run folder.

    split_data -> setup_runtime -> make_datasets -> build_model -> compile -> create run -> fit -> artifacts

`train` writes config.yaml, classes.json and split.csv before the first
step, history.csv after every epoch, best.keras whenever the monitored
metric improves, and metrics.json plus history.png at the end, also when
the run is interrupted with Ctrl-C.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import imgcls
from imgcls import runs
from imgcls.config import Config
from imgcls.runtime import import_tensorflow, setup_runtime


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """max for accuracy-like metrics, min for losses (Keras' own 'auto' would pick min for auc)."""
    if mode != "auto":
        return mode
    return "min" if "loss" in monitor else "max"


def train(config: Config, make_run: Callable[[], Path], log: Callable[[str], None] = print,
          command: str = "") -> tuple[Path, dict[str, Any]]:
    """Train `config`; return the run folder and what its metrics.json holds.

    `make_run` creates the run folder. It is called only once the data is
    split and the model compiled, so a bad input leaves no empty run behind.
    """
    from imgcls.data import make_datasets, split_data

    split = split_data(config)  # before TensorFlow: data errors answer fast
    info = setup_runtime(config.runtime)
    import keras

    from imgcls.models import build_model
    from imgcls.optim import build_loss, build_metrics, build_optimizer, resolve_schedule

    log(f"{info}")
    n_train, n_val = len(split.train_files), len(split.val_files)
    steps_per_epoch = math.ceil(n_train / config.data.batch_size)
    log(f"{split.num_classes} classes, {n_train} training and {n_val} validation images, {steps_per_epoch} steps per epoch")
    train_ds, val_ds = make_datasets(split, config)

    model = build_model(config, split.num_classes)
    model.compile(
        optimizer=build_optimizer(config.train, steps_per_epoch),
        loss=build_loss(config),
        metrics=build_metrics(config, split.num_classes),
        jit_compile=info.jit_compile,
    )
    run = make_run()
    log(f"run folder: {run}")
    _write_run_start(config, run, split, resolve_schedule(config.train, steps_per_epoch), info, command)
    recorder = EpochRecorder(run / runs.HISTORY_CSV, n_train)
    callbacks, early_stopping = _build_callbacks(config, run, recorder, keras)

    status = "finished"
    start = time.perf_counter()
    try:
        # shuffle=False: the dataset already reshuffles single images every epoch.
        model.fit(train_ds, validation_data=val_ds, epochs=config.train.epochs,
                  callbacks=callbacks, shuffle=False, verbose=1 if sys.stderr.isatty() else 2)
    except KeyboardInterrupt:
        status = "interrupted"
        log("\ninterrupted: the current epoch was abandoned; every completed epoch is saved")
    if status == "finished" and early_stopping is not None and early_stopping.stopped_epoch > 0:
        status = "stopped_early"

    metrics = _summarise(config, recorder.rows, status, time.perf_counter() - start, recorder, info, model)
    metrics.update(train_images=n_train, val_images=n_val, classes=split.num_classes)
    runs.write_json(run / runs.METRICS, metrics)
    if recorder.rows:
        from imgcls.plots import plot_history

        plot_history([run], run / runs.HISTORY_PNG)
    return run, metrics


def _write_run_start(config, run, split, schedule, info, command) -> None:
    """Everything needed to understand and repeat the run, written before the first step."""
    resolved = config.to_dict()
    resolved["imgcls"] = {
        "version": imgcls.__version__,
        "tensorflow": tf_version(),
        "keras": __import__("keras").__version__,
        "python": sys.version.split()[0],
        "command": command,
        "device": info.device,
        "precision": info.precision,
        "jit_compile": info.jit_compile,
        "learning_rate_schedule": schedule,
        "data_dir": str(Path(config.data.dir).resolve()),
    }
    runs.write_yaml(run / runs.CONFIG, resolved)
    runs.write_json(run / runs.CLASSES, split.class_names)
    rows = []
    for subset, files, labels, root in (
        ("train", split.train_files, split.train_labels, config.data.dir),
        ("val", split.val_files, split.val_labels, config.data.val_dir or config.data.dir),
    ):
        rows += [{"path": Path(f).relative_to(root).as_posix(), "class": split.class_names[label], "subset": subset}
                 for f, label in zip(files, labels)]
    runs.write_history(run / "split.csv", rows)


def tf_version() -> str:
    return import_tensorflow().__version__


def _build_callbacks(config: Config, run: Path, recorder, keras):
    cb = config.callbacks
    callbacks = [
        recorder.as_keras_callback(keras),
        keras.callbacks.ModelCheckpoint(
            str(run / runs.MODEL), monitor=cb.checkpoint.monitor,
            mode=monitor_mode(cb.checkpoint.monitor, cb.checkpoint.mode), save_best_only=True, verbose=0,
        ),
    ]
    early_stopping = None
    if cb.early_stopping.enabled:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor=cb.early_stopping.monitor, mode=monitor_mode(cb.early_stopping.monitor),
            min_delta=cb.early_stopping.min_delta, patience=cb.early_stopping.patience,
            restore_best_weights=cb.early_stopping.restore_best_weights, verbose=1,
        )
        callbacks.append(early_stopping)
    if cb.reduce_lr_on_plateau.enabled:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=cb.reduce_lr_on_plateau.monitor, mode=monitor_mode(cb.reduce_lr_on_plateau.monitor),
            factor=cb.reduce_lr_on_plateau.factor, patience=cb.reduce_lr_on_plateau.patience,
            min_lr=cb.reduce_lr_on_plateau.min_lr, verbose=1,
        ))
    if cb.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run / "tensorboard")))
    return callbacks, early_stopping


class EpochRecorder:
    """Adds `lr` and `seconds` to each epoch's logs and rewrites history.csv after every epoch."""

    def __init__(self, path: Path, train_images: int):
        self.path = path
        self.train_images = train_images
        self.rows: list[dict[str, float]] = []
        self.train_seconds: list[float] = []  # training phase only, validation excluded

    def as_keras_callback(self, keras):
        from imgcls.optim import current_learning_rate

        recorder = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch_start = self.train_end = time.perf_counter()

            def on_test_begin(self, logs=None):
                self.train_end = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                now = time.perf_counter()
                train_end = self.train_end if self.train_end > self.epoch_start else now
                recorder.train_seconds.append(train_end - self.epoch_start)
                logs = logs if logs is not None else {}
                logs["lr"] = current_learning_rate(self.model.optimizer)
                row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}, "seconds": round(now - self.epoch_start, 3)}
                recorder.rows.append(row)
                runs.write_history(recorder.path, recorder.rows)

        return _Callback()

    def images_per_second(self) -> float | None:
        """Steady-state training throughput: the first epoch (decode, cache fill, tracing) is left out."""
        steady = self.train_seconds[1:] or self.train_seconds
        return round(self.train_images / statistics.median(steady), 1) if steady else None


def _summarise(config, rows, status, wall_time, recorder, info, model) -> dict[str, Any]:
    monitor = config.callbacks.checkpoint.monitor
    mode = monitor_mode(monitor, config.callbacks.checkpoint.mode)
    scored = [r for r in rows if monitor in r]
    best = (max if mode == "max" else min)(scored, key=lambda r: r[monitor]) if scored else None
    return {
        "status": status,
        "monitor": monitor,
        "best_epoch": int(best["epoch"]) if best else None,
        "best": {k: v for k, v in best.items() if k not in ("epoch", "seconds")} if best else {},
        "epochs_run": len(rows),
        "epochs_planned": config.train.epochs,
        "wall_time_s": round(wall_time, 2),
        "train_images_per_s": recorder.images_per_second(),
        "total_params": int(model.count_params()),
        "device": info.device,
        "precision": info.precision,
    }
