"""Checkpoints that survive a crash: best.keras written atomically, and a per-epoch backup to resume from.

    BestModelCheckpoint    <run>/best.keras, the best epoch's model as artifacts hold it (float32, no
                           optimizer state), written to a temporary file and renamed
    EpochBackup            <run>/backup/epoch-<N>/, the state after epoch N, the newest one only:
        model.weights.h5           weights and optimizer state (its iteration count drives the schedules)
        random.npz                 the layers' random-generator states (dropout), which Keras does not save
        early_stopping.npz         EarlyStopping's best weights, when it restores them
        state.json                 epoch N and the state of ModelCheckpoint, EarlyStopping, ReduceLROnPlateau

Why not Keras' BackupAndRestore: it writes its weights and its epoch number
as two files in place (a crash between them resumes the wrong epoch), loses
the dropout generators and every callback's state (patience counters, the
best value so far), and deletes itself when training ends. Here a whole
epoch folder is written under a temporary name and renamed, the same
pattern as Keras' own `save_weights`, plus what it leaves out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgcls.errors import ImgclsError
from imgcls.files import atomic_file, atomic_folder
from imgcls.models import inference_model
from imgcls.run.status import loss_diverged

BACKUP = "backup"
_WEIGHTS = "model.weights.h5"
_RANDOM = "random.npz"
_EARLY_BEST = "early_stopping.npz"
_STATE = "state.json"
# The attributes that make each stateful Keras callback continue where it stopped.
_CALLBACK_STATE = {
    "ModelCheckpoint": ("best",),
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "TimeBudget": ("seconds_spent", "planned", "estimated", "phase_ends"),  # the plan a resumed run keeps
}


def is_stateful(callback) -> bool:
    """Whether `callback` has state the backup keeps (ModelCheckpoint, EarlyStopping, ReduceLROnPlateau, subclasses too)."""
    return _kind(callback) is not None


def _kind(callback) -> str | None:
    return next((c.__name__ for c in type(callback).__mro__ if c.__name__ in _CALLBACK_STATE), None)


def latest_backup(run: Path) -> Path | None:
    """The newest complete epoch folder of `run`'s backup, or None."""
    folder = Path(run) / BACKUP
    epochs = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("epoch-*") if p.name.split("-")[1].isdigit())
    return epochs[-1][1] if epochs else None


def backup_epoch(run: Path) -> int:
    """Epochs completed according to the backup (0 when there is none)."""
    latest = latest_backup(run)
    return json.loads((latest / _STATE).read_text())["epoch"] if latest else 0


class BestModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint deciding when to save (save_best_only); what it saves is the model as artifacts hold it.

    That is `imgcls.models.inference_model`: float32 whatever the training
    precision, without the optimizer state (the backup keeps that, for
    resuming), written to a temporary file beside the target and renamed, so
    a crash mid-save keeps the previous best.keras.
    """

    def _save_model(self, epoch, batch, logs):  # Keras-private hook: see tests/test_keras_internals.py
        if any(loss_diverged(v) for k, v in (logs or {}).items() if k in ("loss", "val_loss")):
            return  # a diverged epoch is never the best, whatever its accuracy says
        if self._should_save_model(epoch, batch, logs, self.filepath):
            with atomic_file(Path(self.filepath)) as temporary:
                inference_model(self.model).save(temporary)


class EpochBackup(keras.callbacks.Callback):
    """Backs up the training state after every epoch; put it after the callbacks whose state it keeps.

    After, so it records the state the other callbacks reached in the same
    epoch, and so its `on_train_begin` runs after theirs (which reset their
    counters) and can put back the `restore` state `restore_state` returned.
    That happens in the first `fit` only: a later phase's `fit` resets them,
    as it does in an uninterrupted run.
    """

    def __init__(self, run: Path, stateful: list, restore: dict[str, Any] | None = None):
        super().__init__()
        self.run, self.stateful, self.pending = Path(run), stateful, restore

    def on_train_begin(self, logs=None):
        if self.pending:
            for callback in self.stateful:
                for name, value in self.pending["callbacks"].get(_kind(callback), {}).items():
                    setattr(callback, name, value)
                if self.pending.get("early_stopping_best") is not None and hasattr(callback, "best_weights"):
                    callback.best_weights = self.pending["early_stopping_best"]
            self.pending = None

    def on_epoch_end(self, epoch, logs=None):
        save_backup(self.model, self.run, epoch + 1, self.stateful)


def save_backup(model, run: Path, epoch: int, stateful: list) -> Path:
    """Write <run>/backup/epoch-<epoch>/ under a temporary name, rename it into place, drop older epochs."""
    folder = Path(run) / BACKUP
    target = folder / f"epoch-{epoch}"  # the same epoch again when a resumed run redoes one that had no backup
    with atomic_folder(target) as tmp:
        model.save_weights(str(tmp / _WEIGHTS))
        np.savez(tmp / _RANDOM, *[np.asarray(v.numpy()) for v in _seed_states(model)])
        state = {"epoch": epoch, "trainable_weights": len(model.trainable_variables), "callbacks": {}, "learning_rate": None,
                 "optimizer": type(model.optimizer).__name__, "optimizer_variables": len(model.optimizer.variables),
                 "precision": model.dtype_policy.name}
        if any(_kind(c) == "ReduceLROnPlateau" for c in stateful):
            # The one thing that changes a constant learning rate; not among the optimizer's saved variables.
            state["learning_rate"] = float(np.asarray(model.optimizer.learning_rate))
        for callback in stateful:
            state["callbacks"][_kind(callback)] = {name: _json_value(getattr(callback, name, None)) for name in _CALLBACK_STATE[_kind(callback)]}
            best_weights = getattr(callback, "best_weights", None)
            if best_weights is not None:
                np.savez(tmp / _EARLY_BEST, *best_weights)
        (tmp / _STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    for older in folder.glob("epoch-*"):
        if older != target:
            shutil.rmtree(older, ignore_errors=True)
    return target


def drop_backup(run: Path) -> None:
    """A finished run has nothing to resume: its backup would only take disk space (Keras does the same)."""
    shutil.rmtree(Path(run) / BACKUP, ignore_errors=True)


def saved_callback_state(run: Path, kind: str) -> dict[str, Any]:
    """What the newest backup of `run` holds of one callback's state (e.g. TimeBudget's plan); {} without one."""
    latest = latest_backup(run)
    if latest is None:
        return {}
    return json.loads((latest / _STATE).read_text(encoding="utf-8")).get("callbacks", {}).get(kind) or {}


def restore_state(model, run: Path) -> dict[str, Any] | None:
    """Load the newest backup into a compiled `model`; return its state for `epoch_backup(restore=...)`, or None."""
    latest = latest_backup(run)
    if latest is None:
        return None
    state = json.loads((latest / _STATE).read_text(encoding="utf-8"))
    # Keras would load the optimizer state of other weights with only a warning (a --force that moved
    # the fine-tuning phase, or changed what it unfreezes): refuse instead.
    saved, now = state.get("trainable_weights"), len(model.trainable_variables)
    if saved is not None and saved != now:
        raise ImgclsError(f"{latest}: the backup trained {saved} weight tensors, this config trains {now} at epoch "
                          f"{state['epoch'] + 1} (train.epochs or train.fine_tune changed?); resume with the run's own "
                          "config, or start a new run")
    # Keras loads optimizer variables only into a built optimizer (BackupAndRestore's own workaround).
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    _check_same_optimizer(model, state, latest)
    model.load_weights(str(latest / _WEIGHTS))
    with np.load(latest / _RANDOM) as saved:
        for variable, i in zip(_seed_states(model), range(len(saved.files))):
            variable.assign(saved[f"arr_{i}"])
    if state.get("learning_rate") is not None:
        model.optimizer.learning_rate = state["learning_rate"]
    state["early_stopping_best"] = None
    if (latest / _EARLY_BEST).is_file():
        with np.load(latest / _EARLY_BEST) as saved:
            state["early_stopping_best"] = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    return state


def _check_same_optimizer(model, state: dict[str, Any], backup: Path) -> None:
    """Refuse a backup whose optimizer state this model's optimizer cannot take.

    Keras would skip it with only a warning, and the run would go on from step
    0 of its schedule with fresh moments. It happens when a --force resume
    changes train.optimizer, or runtime.precision to or from mixed_float16,
    whose loss-scaling optimizer keeps variables of its own.
    """
    saved, now = state.get("optimizer_variables"), len(model.optimizer.variables)
    if saved is None or saved == now:
        return
    was = f"{state.get('optimizer')} under {state.get('precision')}"
    is_ = f"{type(model.optimizer).__name__} under {model.dtype_policy.name}"
    raise ImgclsError(f"{backup}: the backup holds the state of {was} ({saved} variables), this config trains with {is_} "
                      f"({now}); resume with the run's own train.optimizer and runtime.precision, or start a new run")


def _seed_states(model) -> list:
    """The state variables of the layers' SeedGenerators (dropout, augmentation), in a stable order."""
    return [v for v in model.non_trainable_variables if "seed_generator_state" in v.path]


def _json_value(value: Any) -> Any:
    """JSON for a callback attribute (NumPy scalars and infinities included)."""
    if value is None:
        return None
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    return float(value) if isinstance(value, float) else value
