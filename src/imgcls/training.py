"""Training: one straight path from a validated config to a finished run folder.

    plan_data (scan, split) -> setup_runtime -> make_datasets -> build_model -> compile
        -> create the run folder -> fit -> artifacts

`train` writes config.yaml, classes.json, split.csv and skipped_files.txt
(and duplicates.csv when there are any) before the first step, history.csv
after every epoch, best.keras whenever the monitored metric improves, and
metrics.json plus history.png at the end, also when the run is interrupted
with Ctrl-C. Then `imgcls.evaluate` reports on
best.keras (eval.json and its plots), unless the run was interrupted.
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
from imgcls.config import Config, monitor_mode
from imgcls.data import DataPlan, plan_data
from imgcls.report import print_report, write_skipped
from imgcls.runtime import import_tensorflow, setup_runtime


def train(config: Config, make_run: Callable[[], Path], log: Callable | None = None, command: str = "",
          plan: DataPlan | None = None) -> tuple[Path, dict[str, Any]]:
    """Train `config`; return the run folder and what its metrics.json holds.

    `make_run` creates the run folder. It is called only once the data is
    planned and the model compiled, so bad input leaves no empty run behind.
    `plan` is the data plan when the caller has made it already.
    """
    from rich.console import Console
    from rich.text import Text

    log = log or Console(stderr=True, soft_wrap=True).print
    plan = plan or plan_data(config)
    # The data report comes before TensorFlow's slow start, so data surprises show at once.
    print_report(plan, log, skipped_file=f"{runs.SKIPPED} in the run folder")
    info = setup_runtime(config.runtime)
    import keras

    from imgcls.data import make_datasets
    from imgcls.models import build_model
    from imgcls.optim import build_loss, build_metrics, build_optimizer, resolve_schedule

    log(f"{info}")
    datasets = make_datasets(plan, config)
    n_train, n_val, n_test = len(datasets.train_files), len(datasets.val_files), len(datasets.test_files)
    steps_per_epoch = math.ceil(n_train / config.data.batch_size)
    test = f" and {n_test} held-out test" if n_test else ""
    log(f"{datasets.num_classes} classes, {n_train} training, {n_val} validation{test} images, {steps_per_epoch} steps per epoch")
    if plan.class_weight:
        weights = ", ".join(f"{name} {plan.class_weight[i]:.3g}" for i, name in enumerate(plan.class_names))
        log(Text(f"class weights (train.class_weight): {weights}"))

    model = build_model(config, datasets.num_classes)
    model.compile(
        optimizer=build_optimizer(config.train, steps_per_epoch),
        loss=build_loss(config),
        metrics=build_metrics(config, datasets.num_classes),
        jit_compile=info.jit_compile,
    )
    run = make_run()
    log(f"run folder: {run}")
    _write_run_start(config, run, plan, resolve_schedule(config.train, steps_per_epoch), info, command)
    recorder = EpochRecorder(run / runs.HISTORY_CSV, n_train)
    callbacks, early_stopping = _build_callbacks(config, run, recorder, keras)

    status = "finished"
    start = time.perf_counter()
    try:
        # shuffle=False: the dataset already reshuffles single images every epoch.
        model.fit(datasets.train, validation_data=datasets.val, epochs=config.train.epochs, class_weight=plan.class_weight,
                  callbacks=callbacks, shuffle=False, verbose=1 if sys.stderr.isatty() else 2)
    except KeyboardInterrupt:
        status = "interrupted"
        log("\ninterrupted: the current epoch was abandoned; every completed epoch is saved")
    if status == "finished" and early_stopping is not None and early_stopping.stopped_epoch > 0:
        status = "stopped_early"

    metrics = _summarise(config, recorder.rows, status, time.perf_counter() - start, recorder, info, model)
    metrics.update(train_images=n_train, val_images=n_val, test_images=n_test, classes=datasets.num_classes,
                   skipped_files=len(plan.bad_files()))
    runs.write_json(run / runs.METRICS, metrics)
    if recorder.rows:
        from imgcls.plots import plot_history

        plot_history([run], run / runs.HISTORY_PNG)
    from imgcls.evaluate import evaluate_after_training

    evaluate_after_training(config, run, status, log)
    return run, metrics


def _write_run_start(config, run, plan, schedule, info, command) -> None:
    """Everything needed to understand, audit and repeat the run, written before the first step."""
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
        "cache": plan.cache.mode,
    }
    runs.write_yaml(run / runs.CONFIG, resolved)
    runs.write_json(run / runs.CLASSES, plan.class_names)
    runs.write_history(run / runs.SPLIT, plan.split_rows())
    write_skipped(plan, run / runs.SKIPPED)
    if plan.duplicates:
        runs.write_history(run / runs.DUPLICATES, [
            {"subset": d.subset, "path": plan.relative(d.path), "same_as_subset": d.same_as_subset,
             "same_as": plan.relative(d.same_as), "dropped": d.dropped} for d in plan.duplicates])


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
    best = runs.best_row(rows, monitor, config.callbacks.checkpoint.mode)
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
