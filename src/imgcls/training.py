"""Training: one straight path from a validated config to a finished run folder.

    plan_data (scan, split) -> setup_runtime -> make_datasets -> build_model -> compile
        -> create the run folder -> fit (per phase) -> artifacts

A run is one phase, or two with `train.fine_tune` (transfer learning): the
head alone with the pretrained backbone frozen, then the backbone (or its
top layers) unfrozen at a lower learning rate. Both phases share the
callbacks, so history.csv numbers epochs on, best.keras is the best of both,
and `train.time_limit_minutes` is one budget for the whole run.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import imgcls
from imgcls import runs
from imgcls.config import Config, TrainConfig, monitor_mode
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
    info = setup_runtime(config.runtime)
    import keras

    from imgcls.data import make_datasets
    from imgcls.models import build_model

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
    phases = _phases(config, steps_per_epoch)
    _prepare_phase(model, phases[0], config, datasets.num_classes, info, steps_per_epoch)
    run = make_run()
    log(f"run folder: {run}")
    print_report(plan, log, skipped_file=run / runs.SKIPPED)
    _write_run_start(config, run, plan, phases, info, command)
    recorder = EpochRecorder(run / runs.HISTORY_CSV, n_train)
    callbacks, early_stopping, clock = _build_callbacks(config, run, recorder, keras)

    status = "finished"
    start = time.perf_counter()
    try:
        for index, phase in enumerate(phases):
            if index:
                if clock is not None and clock.spent:
                    break
                _prepare_phase(model, phase, config, datasets.num_classes, info, steps_per_epoch)
            if len(phases) > 1:
                log(f"phase {index + 1} of {len(phases)}: {phase.description}, epochs {phase.first_epoch + 1}-{phase.last_epoch}")
            # shuffle=False: the dataset already reshuffles single images every epoch.
            model.fit(datasets.train, validation_data=datasets.val, initial_epoch=phase.first_epoch,
                      epochs=phase.last_epoch, class_weight=plan.class_weight,
                      callbacks=_with_ema(callbacks, config, keras), shuffle=False,
                      verbose=1 if sys.stderr.isatty() else 2)
    except KeyboardInterrupt:
        status = "interrupted"
        log("\ninterrupted: the current epoch was abandoned; every completed epoch is saved")
    if status == "finished" and clock is not None and clock.spent:
        status = "time_limit"
        log(f"time limit: stopped after {len(recorder.rows)} epochs (train.time_limit_minutes {config.train.time_limit_minutes:g})")
    elif status == "finished" and early_stopping is not None and early_stopping.stopped_epoch > 0:
        status = "stopped_early"

    metrics = _summarise(config, recorder.rows, status, time.perf_counter() - start, recorder, info, model)
    metrics["phases"] = [{"phase": p.description, "epochs": [p.first_epoch + 1, p.last_epoch]} for p in phases]
    metrics.update(train_images=n_train, val_images=n_val, test_images=n_test, classes=datasets.num_classes,
                   skipped_files=len(plan.bad_files()))
    runs.write_json(run / runs.METRICS, metrics)
    if recorder.rows:
        from imgcls.plots import plot_history

        plot_history([run], run / runs.HISTORY_PNG)
    from imgcls.evaluate import evaluate_after_training

    evaluate_after_training(config, run, status, log)
    return run, metrics


@dataclass
class Phase:
    """One `fit` of a run: its epochs (Keras numbering: first_epoch is 0-based) and what trains."""

    description: str
    train: TrainConfig  # optimizer, learning rate and schedule of this phase
    first_epoch: int
    last_epoch: int
    trainable: str | int  # the backbone's trainable part: all | none | N top layers
    schedule: dict = field(default_factory=dict)


def _phases(config: Config, steps_per_epoch: int) -> list[Phase]:
    """One phase, or two for transfer learning: head alone with the backbone frozen, then fine-tuning."""
    from imgcls.optim import fine_tune_train_config, resolve_schedule

    train = config.train
    if train.fine_tune is None:
        return [Phase("all layers", train, 0, train.epochs, "all", resolve_schedule(train, steps_per_epoch))]
    tune = fine_tune_train_config(train)
    unfreeze = train.fine_tune.unfreeze
    return [
        Phase("head only, backbone frozen", train, 0, train.epochs, "none", resolve_schedule(train, steps_per_epoch)),
        Phase(f"fine-tuning, {'whole backbone' if unfreeze == 'all' else f'top {unfreeze} backbone layers'} unfrozen "
              f"at learning rate {tune.learning_rate:g}", tune, train.epochs, train.epochs + tune.epochs, unfreeze,
              resolve_schedule(tune, steps_per_epoch)),
    ]


def _prepare_phase(model, phase: Phase, config: Config, num_classes: int, info, steps_per_epoch: int) -> None:
    """Freeze what the phase keeps fixed and compile with the phase's optimizer (Keras needs a new compile after either)."""
    from imgcls.models.backbone import set_backbone_trainable
    from imgcls.optim import build_loss, build_metrics, build_optimizer

    if config.train.fine_tune is not None:
        set_backbone_trainable(model, phase.trainable)
    model.compile(
        optimizer=build_optimizer(phase.train, steps_per_epoch),
        loss=build_loss(config),
        metrics=build_metrics(config, num_classes),
        jit_compile=info.jit_compile,
    )


def _with_ema(callbacks: list, config: Config, keras) -> list:
    """Fresh EMA callbacks around the run's own: first the swap, last the guard (see imgcls.callbacks)."""
    if not config.train.ema:
        return callbacks
    from imgcls.callbacks import ema_callbacks

    swap, keep = ema_callbacks(keras)
    return [swap, *callbacks, keep]


def _write_run_start(config, run, plan, phases, info, command) -> None:
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
        "learning_rate_schedule": phases[0].schedule,
        **({"fine_tune_learning_rate_schedule": phases[1].schedule} if len(phases) > 1 else {}),
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
    clock = None
    if config.train.time_limit_minutes:
        from imgcls.callbacks import time_limit

        clock = time_limit(keras, config.train.time_limit_minutes)
        callbacks.append(clock)
    return callbacks, early_stopping, clock


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
        "epochs_planned": config.train.epochs + (config.train.fine_tune.epochs if config.train.fine_tune else 0),
        "wall_time_s": round(wall_time, 2),
        "train_images_per_s": recorder.images_per_second(),
        "total_params": int(model.count_params()),
        "device": info.device,
        "precision": info.precision,
    }
