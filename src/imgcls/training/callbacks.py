"""The callbacks of a training run, in the order `build_callbacks` puts them.

    HistoryWriter          history.csv after every epoch (with `lr` and `seconds`), steady-state images/s
    StopOnNonFiniteLoss    stops at the first NaN, infinite or exploded loss (the run fails)
    BestModelCheckpoint    best.keras (imgcls.training.checkpoints)
    EarlyStopping, ReduceLROnPlateau, TensorBoard   Keras' own, when the config enables them
    TimeBudget             train.time_limit_minutes: plans the epochs that fit, fits the schedule, stops (imgcls.training.budget)
    EpochBackup            the per-epoch backup (imgcls.training.checkpoints): after the callbacks whose state it keeps
    StopOnSignal           Ctrl-C or SIGTERM (noted by the trainer's handler), acted on at the next batch
    the caller's callbacks `train(..., callbacks=[...])`: last, so one that stops training sees the epoch saved

With train.ema, `with_ema` wraps every fit's list: Keras' `SwapEMAWeights`
first (it swaps the averaged weights into the model before validation, so
val metrics, best.keras and EarlyStopping's best weights are all EMA
weights) and `KeepEMAOnStop` last. Keras copies the EMA weights into the
model for good only when the last planned epoch ends; the guard does the
same when a run stops earlier (early stopping, time limit).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from imgcls.config import Config, monitor_mode
from imgcls.files import write_csv
from imgcls.run import layout
from imgcls.run.status import loss_diverged
from imgcls.training.budget import TimeBudget
from imgcls.training.checkpoints import BestModelCheckpoint, EpochBackup, is_stateful
from imgcls.training.optim import current_learning_rate


class HistoryWriter(keras.callbacks.Callback):
    """Adds `lr` and `seconds` to each epoch's logs and rewrites history.csv after every epoch."""

    def __init__(self, path: Path, train_images: int, rows: list[dict[str, float]] = ()):
        super().__init__()
        self.path = path
        self.train_images = train_images
        self.rows: list[dict[str, float]] = list(rows)  # a resumed run's earlier epochs
        self.started_epoch = 0  # 1-based number of the epoch in progress or last begun
        self.train_seconds: list[float] = []  # training phase only, validation excluded

    def on_epoch_begin(self, epoch, logs=None):
        self.started_epoch = epoch + 1
        self.epoch_start = self.train_end = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        train_end = self.train_end if self.train_end > self.epoch_start else now
        self.train_seconds.append(train_end - self.epoch_start)
        logs = logs if logs is not None else {}
        logs["lr"] = current_learning_rate(self.model.optimizer)
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}, "seconds": round(now - self.epoch_start, 3)})
        write_csv(self.path, self.rows)

    def images_per_second(self, last_epoch_cut: bool = False) -> float | None:
        """Steady-state training throughput: the first epoch (decode, cache fill, tracing) is left out.

        `last_epoch_cut`: the last epoch stopped mid-way (a time budget shorter than it), so it does not count.
        """
        whole = self.train_seconds[:-1] if last_epoch_cut else self.train_seconds
        steady = whole[1:] or whole
        return round(self.train_images / statistics.median(steady), 1) if steady else None


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN, infinite or exploded: nothing after it can be trusted.

    `diverged` says where ("epoch 3, step 12"); BestModelCheckpoint never saves such an epoch.
    """

    def __init__(self):
        super().__init__()
        self.diverged = ""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and loss_diverged(loss) and not self.diverged:
            self.diverged = f"epoch {self.epoch + 1}, step {batch + 1}"
            self.model.stop_training = True


class StopOnSignal(keras.callbacks.Callback):
    """Raises the interruption a signal asked for at the next batch, where it cannot be lost.

    A handler that raised wherever the main thread happened to be could land
    inside a library's bare `except:` (Keras has one around every step's
    `float(loss)`) and be swallowed: the run went on as if never interrupted.
    The trainer's handler only notes the signal in `received`; a second signal
    before the next batch raises at once (a step that takes minutes).
    """

    def __init__(self):
        super().__init__()
        self.received: type[BaseException] | None = None
        self.raised = False

    def raise_received(self, *_args, **_kwargs):
        if self.received is not None:
            self.raised = True
            raise self.received()

    on_train_begin = on_epoch_begin = on_train_batch_end = on_test_batch_end = raise_received


class KeepEMAOnStop(keras.callbacks.Callback):
    """After every stopper: a run that stops before its last planned epoch keeps the EMA weights too."""

    def __init__(self, swap: keras.callbacks.SwapEMAWeights):
        super().__init__()
        self.swap = swap

    def on_epoch_end(self, epoch, logs=None):
        # Keras-private names (tests/test_keras_internals.py): whether the EMA weights are in the model, and
        # the step that copies them in for good, which Keras runs only at the last planned epoch.
        if self.model.stop_training and self.swap._ema_weights_in_model and epoch != self.params["epochs"] - 1:
            self.swap._finalize_ema_values()


def with_ema(callbacks: list, config: Config, resumed: bool = False) -> list:
    """A fit's callbacks inside a fresh EMA pair (a new optimizer has new EMA variables), or as they are without EMA.

    `resumed`: the fit continues from a backup, which was saved after the
    swap (the EMA weights in the model, the raw ones in the optimizer), so
    the next epoch must begin by swapping them back.
    """
    if not config.train.ema:
        return callbacks
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    swap._ema_weights_in_model = resumed
    return [swap, *callbacks, KeepEMAOnStop(swap)]


@dataclass
class RunCallbacks:
    """Every callback of a run, and the ones training asks about afterwards."""

    all: list
    history: HistoryWriter
    divergence: StopOnNonFiniteLoss
    early_stopping: keras.callbacks.EarlyStopping | None = None
    budget: TimeBudget | None = None
    extra: list = field(default_factory=list)
    signals: StopOnSignal = field(default_factory=StopOnSignal)


def build_callbacks(config: Config, run: Path, history: HistoryWriter, restored: dict | None = None,
                    extra: list = (), budget: TimeBudget | None = None) -> RunCallbacks:
    """The run's callbacks in order (see the module docstring); `restored`: a backup's callback state to put back."""
    cb = config.callbacks
    divergence = StopOnNonFiniteLoss()
    callbacks: list = [history, divergence, BestModelCheckpoint(
        str(run / layout.MODEL), monitor=cb.checkpoint.monitor, mode=monitor_mode(cb.checkpoint.monitor, cb.checkpoint.mode),
        save_best_only=True, verbose=0)]
    early_stopping = None
    if cb.early_stopping.enabled:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor=cb.early_stopping.monitor, mode=monitor_mode(cb.early_stopping.monitor),
            min_delta=cb.early_stopping.min_delta, patience=cb.early_stopping.patience,
            restore_best_weights=cb.early_stopping.restore_best_weights, verbose=1)
        callbacks.append(early_stopping)
    if cb.reduce_lr_on_plateau.enabled:
        plateau = cb.reduce_lr_on_plateau
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=plateau.monitor, mode=monitor_mode(plateau.monitor), factor=plateau.factor,
            patience=plateau.patience, min_lr=plateau.min_lr, verbose=1))
    if cb.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run / layout.TENSORBOARD)))
    if budget is not None:
        callbacks.append(budget)
    callbacks.append(EpochBackup(run, [c for c in callbacks if is_stateful(c)], restored))
    signals = StopOnSignal()
    return RunCallbacks(callbacks + [signals] + list(extra), history, divergence, early_stopping, budget, list(extra), signals)
