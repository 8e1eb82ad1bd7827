"""train.time_limit_minutes: a time budget that the learning-rate schedule is laid over.

A cosine schedule laid over `train.epochs` is cut before it anneals when the
budget ends first, and a budget longer than the epochs is wasted. So with a
budget, `train.epochs` is only the cap:

    1. The first epoch of each phase is timed from its start to the next
       epoch's start (validation, checkpoint and backup included).
    2. At every epoch end, `plan_epochs` estimates how many more epochs fit
       the phase's share of the budget at the pace measured so far (the
       median of the recent epochs; the first, which also traces the model
       and fills the cache, only until there is another) and moves the end
       of the schedule there (`FittedSchedule.fit_to`).
    3. When the next epoch would not fit, the phase ends: on its planned,
       annealed last epoch. A two-phase (fine-tuning) run gives each phase a
       share of the budget in proportion to its configured epochs; time the
       first phase leaves over goes to the second, which starts right after it.

The plan is part of the run's backup: a resumed run keeps it and the budget
it had left (`seconds_spent` carries the earlier sessions' training time).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="imgcls")
class FittedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`inner`, a schedule laid over `total_steps`, refitted while training (`fit_to`) to end at another step.

    The warmup keeps its length; after it, `inner` runs `stretch` times as
    fast, so its decay ends at the planned step: the same curve as the
    schedule built for that length. `stretch` is a variable that every
    training step reads, so a new plan needs no recompiling.
    """

    def __init__(self, inner, warmup_steps: int, total_steps: int, stretch: float = 1.0):
        self.inner, self.warmup_steps, self.total_steps = inner, int(warmup_steps), int(total_steps)
        self.stretch = keras.Variable(stretch, dtype="float32", trainable=False, name="schedule_stretch")

    def fit_to(self, planned_steps: int) -> None:
        """End the decay at optimizer step `planned_steps` (counted from the phase's start)."""
        decay = max(1, self.total_steps - self.warmup_steps)
        self.stretch.assign(decay / max(1, planned_steps - self.warmup_steps))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        return self.inner(ops.where(step < warmup, step, warmup + (step - warmup) * self.stretch))

    def get_config(self):
        return {"inner": keras.saving.serialize_keras_object(self.inner), "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "stretch": float(self.stretch.numpy())}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "inner": keras.saving.deserialize_keras_object(config["inner"])})


def fitted_schedule(optimizer) -> FittedSchedule | None:
    """The optimizer's FittedSchedule (inside a mixed-precision loss-scale wrapper too), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(inner, "_learning_rate", None)
    return schedule if isinstance(schedule, FittedSchedule) else None


def _now() -> float:
    return time.perf_counter()


def steady_pace(epoch_seconds: list[float]) -> float:
    """Seconds an epoch now: the median of the last 5 after the first, which traces and fills the cache (slower)."""
    return statistics.median(epoch_seconds[1:][-5:] or epoch_seconds)


def plan_epochs(done: int, cap: int, seconds_left: float, epoch_seconds: list[float]) -> int:
    """The last epoch (1-based, Keras' count) that fits `seconds_left` after `done` epochs, never past `cap`.

    `epoch_seconds`: the durations of this phase's whole epochs so far, the first one first.
    """
    pace = steady_pace(epoch_seconds)
    more = math.floor(max(0.0, seconds_left) / pace) if pace > 0 else cap
    return min(cap, done + more)


class TimeBudget(keras.callbacks.Callback):
    """Plans each phase's epochs to fit the budget, fits its schedule to them, and stops on time.

    `spent` says whether the budget ended the run (status time_limit);
    `planned`, `estimated`: the epochs planned now and at the first estimate.
    """

    def __init__(self, minutes: float, phases: list, steps_per_epoch: int, log: Callable = print,
                 clock: Callable[[], float] | None = None):
        super().__init__()
        clock = clock or _now
        self.seconds = minutes * 60
        self.phases, self.steps_per_epoch, self.log, self.clock = phases, steps_per_epoch, log, clock
        configured = [p.last_epoch - p.first_epoch for p in phases]
        # The elapsed training time at which each phase must end: shares in proportion to configured epochs.
        self.deadlines = [self.seconds * sum(configured[:i + 1]) / sum(configured) for i in range(len(phases))]
        self.phase = 0
        self.spent = False
        self.cut = False  # the budget ended mid-epoch: that epoch is partial
        self.seconds_spent = 0.0  # training time of earlier sessions (restored from the backup), then of this one
        self.planned: int | None = None  # the current phase's planned last epoch
        self.estimated: int | None = None  # the whole run's epochs at the first estimate
        self.phase_ends: list[int] = []  # the last epoch of each phase that has ended (restored on resume)
        self._start = None
        self._epoch_seconds: list[float] = []
        self._epoch_begin = None
        self._reported = None

    def planned_total(self) -> int:
        """The run's epochs as planned now: the current phase's plan, and the phases after it as configured."""
        current = self.phases[self.phase]
        later = sum(p.last_epoch - p.first_epoch for p in self.phases[self.phase + 1:])
        return (self.planned if self.planned is not None else current.last_epoch) + later

    # ---- the clock: training time only, across phases and sessions
    def elapsed(self) -> float:
        return self.seconds_spent if self._start is None else self.clock() - self._start

    def begin_phase(self, index: int) -> None:
        """Called by the trainer before each phase's fit."""
        if index != self.phase:
            self.phase, self.planned, self._epoch_seconds, self._reported = index, None, [], None

    def on_train_batch_begin(self, batch, logs=None):
        if self._start is None:
            self._start = self.clock() - self.seconds_spent
            if self.planned is not None:  # a resumed run: the backup's plan
                self._fit_schedule(self.planned)
                self.log(f"time budget: keeping the run's plan, the schedule ends at epoch {self.planned}; "
                         f"{max(0.0, self.seconds - self.seconds_spent):.0f} s of the {self.seconds / 60:g} min budget left")

    def on_epoch_begin(self, epoch, logs=None):
        now = self.clock()
        if self._epoch_begin is not None:  # the previous epoch, whole: validation and the backup included
            self._epoch_seconds.append(now - self._epoch_begin)
        self._epoch_begin = now

    def on_train_end(self, logs=None):
        self._epoch_begin = None  # the next phase times its own epochs

    def on_train_batch_end(self, batch, logs=None):
        if self.elapsed() >= self.seconds and not self.spent:  # one epoch longer than the whole budget: stop mid-way
            self.spent = self.cut = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        done, phase = epoch + 1, self.phases[self.phase]
        self.seconds_spent = self.elapsed()
        if done >= phase.last_epoch:
            return  # the phase's cap: nothing left to plan
        current = self.clock() - self._epoch_begin
        measured = self._epoch_seconds + [current]
        left = self.deadlines[self.phase] - self.seconds_spent
        if self.planned is not None and not self._epoch_seconds and left > 0:
            return  # this session's first epoch traces the model: keep the plan (a resumed run's) until a steady one
        planned = plan_epochs(done, phase.last_epoch, left, measured)
        if planned <= done:
            self._end_phase(done)
            return
        self.planned = planned
        self._fit_schedule(planned)
        if self.estimated is None:
            self.estimated = self.planned_total()
        self._report(planned, steady_pace(measured), left)

    # ---- the plan
    def _fit_schedule(self, planned: int) -> None:
        schedule = fitted_schedule(self.model.optimizer)
        if schedule is not None:
            schedule.fit_to((planned - self.phases[self.phase].first_epoch) * self.steps_per_epoch)

    def _end_phase(self, done: int) -> None:
        """The next epoch would not fit: this phase ends here, and the next one starts right after it."""
        self.planned = done
        self.phase_ends.append(done)
        relay_phases(self.phases, self.phase_ends)
        self.model.stop_training = True
        if self.phase == len(self.phases) - 1 or self.elapsed() >= self.seconds:
            self.spent = True

    def _report(self, planned: int, pace: float, left: float) -> None:
        """The first plan of each phase in full; a new one only when it moved by 10% (the pace settles)."""
        if self._reported is not None and abs(planned - self._reported) < max(2, 0.1 * self._reported):
            return
        first = self._reported is None
        self._reported = planned
        if not first:
            self.log(f"time budget: re-planned to end at epoch {planned} ({pace:.1f} s an epoch)")
            return
        cap = self.phases[self.phase].last_epoch
        if planned >= cap:
            self.log(f"time budget: all {cap} epochs of train.epochs fit the {self.seconds / 60:g} min budget at "
                     f"{pace:.1f} s an epoch; the schedule keeps its length")
            return
        share = f"phase {self.phase + 1}'s share of " if len(self.phases) > 1 else ""
        fits = (f"epoch {planned}, what fits the {left:.0f} s left of {share}the {self.seconds / 60:g} min budget at "
                f"{pace:.1f} s an epoch (validation and checkpoints included); re-planned as the pace settles; "
                f"train.epochs {cap} is only the cap")
        if fitted_schedule(self.model.optimizer) is not None:
            self.log(f"time budget: the schedule now ends at {fits}")
        else:  # nothing to move: say so, rather than let a user believe the rate anneals
            self.log(f"time budget: training ends at {fits}; the learning-rate schedule keeps its own periods (only a "
                     "cosine_decay without decay_epochs is laid over the budget)")


def relay_phases(phases: list, phase_ends: list[int]) -> None:
    """Lay the phases out as they ran: each follows the one before it, and one that ended early ends there."""
    for i, phase in enumerate(phases):
        if i > 0:
            length = phase.last_epoch - phase.first_epoch
            phase.first_epoch = phases[i - 1].last_epoch
            phase.last_epoch = phase.first_epoch + length
        if i < len(phase_ends):
            phase.last_epoch = phase_ends[i]
