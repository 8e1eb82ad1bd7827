"""Training callbacks imgcls adds to Keras' own: the time budget and EMA weights.

    clock = time_limit(keras, minutes=3)       # one clock for both phases of a run
    callbacks = ema_callbacks(keras) + [ModelCheckpoint(...), ..., clock] + [keep_ema_on_stop]

Keras' optimizer `use_ema=True` keeps the averaged weights inside the
optimizer; `SwapEMAWeights(swap_on_epoch=True)`, placed before
ModelCheckpoint, swaps them into the model for validation and for the
epoch-end callbacks, so val metrics, best.keras and EarlyStopping's best
weights are all EMA weights. Keras copies them into the model for good only
when the last planned epoch ends; `keep_ema_on_stop` does the same when a
run stops earlier (early stopping, time limit), so the model after `fit`
holds the EMA weights in every case.
"""

from __future__ import annotations

import time


def time_limit(keras, minutes: float):
    """A callback that stops training once `minutes` of training time are spent.

    At an epoch end it also stops when the next epoch (as long as the last
    one) would overrun the budget, so a run ends on a whole epoch whenever it
    can. The clock starts at the first batch of the first `fit` and keeps
    running across fine-tuning phases; `spent` says whether the budget ran out.
    """

    class TimeLimit(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = minutes * 60
            self.start = None
            self.spent = False
            self.epoch_start = None

        def elapsed(self) -> float:
            return time.perf_counter() - self.start

        def _stop(self):
            self.spent = True
            self.model.stop_training = True

        def on_train_batch_begin(self, batch, logs=None):
            if self.start is None:
                self.start = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if self.elapsed() >= self.seconds:  # an epoch longer than the budget ends mid-way
                self._stop()

        def on_epoch_end(self, epoch, logs=None):
            last = epoch + 1 >= self.params["epochs"]  # nothing left to cut short in this fit
            if not last and self.start is not None and self.elapsed() + (time.perf_counter() - self.epoch_start) > self.seconds:
                self._stop()

    return TimeLimit()


def ema_callbacks(keras, resumed: bool = False) -> tuple:
    """(first, last): SwapEMAWeights to put before ModelCheckpoint, and its guard to put after every stopper.

    Make a new pair for every `fit`: a new optimizer has new EMA variables.
    `resumed`: the fit continues from a backup, which was saved after the
    swap (the EMA weights in the model, the raw ones in the optimizer), so
    the next epoch must begin by swapping them back.
    """
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    swap._ema_weights_in_model = resumed

    class KeepEMAOnStop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # Keras finalises EMA values only at the last planned epoch; an earlier stop
            # would otherwise leave the raw weights in the model after fit.
            if self.model.stop_training and swap._ema_weights_in_model and epoch != self.params["epochs"] - 1:
                swap._finalize_ema_values()

    return swap, KeepEMAOnStop()
