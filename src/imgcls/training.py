"""Training: one straight path from a validated config to a finished run folder.

    plan_data (scan, split) -> setup_runtime -> make_datasets -> build_model -> compile
        -> create the run folder -> fit (per phase) -> artifacts

`train` writes config.yaml, classes.json, split.csv and skipped_files.txt
(and duplicates.csv when there are any) before the first step, history.csv
and the backup (`imgcls.checkpoints`) after every epoch, best.keras whenever
the monitored metric improves, and metrics.json plus history.png at the end,
also when the run is interrupted with Ctrl-C or SIGTERM, whose message gives
the command that resumes it. Then `imgcls.evaluate` reports on best.keras
(eval.json and its plots), unless the run was interrupted.

With `resume`, the same path continues an existing run folder from its
backup. Under runtime.distribute the model is built in the strategy's scope,
and only the chief process writes the run folder.
"""

from __future__ import annotations

import gc
import math
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import imgcls
from imgcls import checkpoints
from imgcls.run import layout
from imgcls.run.status import best_row
from imgcls.errors import ImgclsError
from imgcls.files import write_csv, write_json, write_yaml
from imgcls.config import Config, TrainConfig, monitor_mode
from imgcls.data.plan import DataPlan, plan_data
from imgcls.data.report import print_report, write_skipped
from imgcls.runtime import import_tensorflow, setup_runtime


def train(config: Config, make_run: Callable[[int], Path], log: Callable | None = None, command: str = "",
          plan: DataPlan | None = None, resume: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Train `config`; return the run folder and what its metrics.json holds.

    `make_run(bytes_needed)` creates the run folder (or, resuming, checks the
    old one has room). It is called only once the data is planned and the
    model compiled, so bad input leaves no empty run behind. `plan` is the
    data plan when the caller has made it already. `resume` is a run folder
    to continue from its last backed-up epoch (see `imgcls.checkpoints`).
    """
    from rich.console import Console
    from rich.text import Text

    log = log or Console(stderr=True, soft_wrap=True, markup=False).print
    plan = plan or plan_data(config)
    # The data report comes before TensorFlow's slow start, so data surprises show at once.
    print_report(plan, log, skipped_file=f"{layout.SKIPPED} in the run folder")
    info = setup_runtime(config.runtime, distribute=True)
    import keras

    from imgcls.data.pipeline import make_datasets
    from imgcls.models import build_model

    log(f"{info}")
    if resume and info.distribute == "multi_worker":
        raise ImgclsError("--resume: not supported with runtime.distribute: multi_worker (only the chief has the backup); "
                          "start a new run, or resume on one machine with --set runtime.distribute=none --force")
    first_epoch = checkpoints.backup_epoch(resume) if resume else 0
    datasets = make_datasets(plan, config, first_epoch, replicas=info.replicas)
    n_train, n_val, n_test = len(datasets.train_files), len(datasets.val_files), len(datasets.test_files)
    global_batch = config.data.batch_size * info.replicas
    steps_per_epoch = math.ceil(n_train / global_batch)
    test = f" and {n_test} held-out test" if n_test else ""
    log(f"{datasets.num_classes} classes, {n_train} training, {n_val} validation{test} images, {steps_per_epoch} steps per epoch")
    if info.replicas > 1:
        log(f"global batch {global_batch} = {config.data.batch_size} per replica x {info.replicas} replicas"
            + ("; learning rate x " + str(info.replicas) if config.train.scale_learning_rate == "linear" else ""))
    if plan.class_weight:
        weights = ", ".join(f"{name} {plan.class_weight[i]:.3g}" for i, name in enumerate(plan.class_names))
        log(Text(f"class weights (train.class_weight): {weights}"))

    phases = _phases(config, steps_per_epoch, info.replicas)
    with info.scope():  # variables of the model, optimizer and metrics are mirrored across replicas
        model = build_model(config, datasets.num_classes)
        # A resumed run starts in its backup's phase: the backup holds that phase's optimizer variables.
        _prepare_phase(model, phases[_phase_of(phases, first_epoch)], config, datasets.num_classes, info, steps_per_epoch)
    # Only the chief writes the run folder; other workers save into a scratch folder (their saves
    # take part in the collective ops) that is deleted at the end.
    run = make_run(checkpoint_bytes(model)) if info.is_chief else Path(tempfile.mkdtemp(prefix="imgcls-worker-"))
    try:
        run, metrics = _train_in(run, config, model, datasets, plan, info, log, command, resume, first_epoch,
                                 steps_per_epoch, keras, phases)
    finally:
        if not info.is_chief:
            shutil.rmtree(run, ignore_errors=True)
        # The mixed policy is for training only: the evaluation below, and whatever the caller builds next, get Keras' default.
        keras.mixed_precision.set_global_policy("float32")
    if info.is_chief:
        # Evaluation loads best.keras and decodes the validation images again: let it reuse the
        # memory of the training model and the cached images instead of adding to it.
        del model, datasets
        keras.backend.clear_session()
        gc.collect()
        _report_on(run, config, metrics, log)
    return run, metrics


def _train_in(run, config, model, datasets, plan, info, log, command, resume, first_epoch, steps_per_epoch, keras, phases):
    """Fit `model` (phase by phase) with `run` as the run folder, then write metrics.json, history.png and the evaluation."""
    from imgcls.data.pipeline import make_datasets

    n_train = len(datasets.train_files)
    if info.is_chief:
        log(f"run folder: {run}")
    previous: list[dict[str, float]] = []
    restored = None
    if resume:
        with info.scope():
            restored = checkpoints.restore_state(model, run)
        previous = _history_until(run, first_epoch)
        log(f"resuming after epoch {first_epoch} of {config.total_epochs}"
            + (f" (optimizer step {int(model.optimizer.iterations.numpy())})" if restored else " (no epoch was backed up: from the start)"))
        _record_resume(run, config, command)
    else:
        _write_run_start(config, run, plan, phases, info, command)
    _multi_worker_workarounds(model, info, datasets.val)
    recorder = EpochRecorder(run / layout.HISTORY_CSV, n_train, previous)
    callbacks, early_stopping, clock = _build_callbacks(config, run, recorder, keras, restored)

    status, stopped_by = "finished", None
    start = time.perf_counter()
    try:
        with _sigterm_raises_interrupt():
            current = _phase_of(phases, first_epoch)  # prepared in `train`, with the backup restored into it
            for index in range(current, len(phases)):
                phase, train_ds = phases[index], datasets.train
                if index > current:
                    if clock is not None and clock.spent:
                        break
                    with info.scope():
                        _prepare_phase(model, phase, config, datasets.num_classes, info, steps_per_epoch)
                    # The training dataset starts at a given epoch (its shuffles are seeded per epoch).
                    train_ds = make_datasets(plan, config, phase.first_epoch, replicas=info.replicas).train
                initial_epoch = max(first_epoch, phase.first_epoch)
                if len(phases) > 1 and initial_epoch < phase.last_epoch:
                    log(f"phase {index + 1} of {len(phases)}: {phase.description}, epochs {initial_epoch + 1}-{phase.last_epoch}")
                # A phase the backup completed still gets its (empty) fit: its end (EMA values, EarlyStopping's
                # best weights) happens as in an uninterrupted run. shuffle=False: the dataset reshuffles every epoch.
                fit_callbacks = _with_ema(callbacks, config, keras, resumed=bool(restored) and index == current)
                model.fit(train_ds, validation_data=datasets.val, epochs=phase.last_epoch,
                          initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                          class_weight=plan.class_weight, callbacks=fit_callbacks, shuffle=False,
                          verbose=1 if sys.stderr.isatty() else 2)
    except KeyboardInterrupt as exc:
        status, stopped_by = "interrupted", getattr(exc, "signal", "SIGINT")
        log(f"\n{_interrupted_message(run, recorder, stopped_by)}")
    except OSError as exc:  # a full disk or a vanished folder while saving: keep what was written before
        try:
            _write_metrics(config, run, recorder, "failed", time.perf_counter() - start, info, model, datasets, plan, previous)
        except OSError:
            pass  # the disk is still full: `imgcls runs` shows the run as failed anyway (its process is gone)
        raise ImgclsError(f"{exc.filename or run}: {exc.strerror or exc}; training stopped, the last good best.keras and "
                          f"backup are intact; free space, then resume with: {resume_command(run)}") from None
    if status == "finished" and clock is not None and clock.spent:
        status = "time_limit"
        log(f"time limit: stopped after {len(recorder.rows)} epochs (train.time_limit_minutes {config.train.time_limit_minutes:g})")
    elif status == "finished" and early_stopping is not None and early_stopping.stopped_epoch > 0:
        status = "stopped_early"
    if status != "interrupted":
        checkpoints.drop_backup(run)

    metrics = _write_metrics(config, run, recorder, status, time.perf_counter() - start, info, model, datasets, plan,
                             previous, stopped_by, phases)
    if not info.is_chief:
        log(f"{info.task[0]} {info.task[1]}: {status} after {len(recorder.rows)} epochs; the chief wrote the run folder")
    return run, metrics


def _report_on(run: Path, config: Config, metrics: dict[str, Any], log: Callable) -> None:
    """history.png and the evaluation of best.keras: the last artifacts of a run."""
    from imgcls.evaluate import evaluate_after_training
    from imgcls.plots import plot_history

    try:
        if metrics["epochs_run"]:
            plot_history([run], run / layout.HISTORY_PNG)
        evaluate_after_training(config, run, metrics["status"], log)
    except KeyboardInterrupt:  # training's own artifacts are complete: say so, and what is left to do
        log(f"\ninterrupted after training, which is {metrics['status'].replace('_', ' ')} and saved; the plot and "
            f"evaluation were not finished: imgcls plot {run} && imgcls evaluate {run}")
        raise


def _multi_worker_workarounds(model, info, dataset) -> None:
    """Two Keras 3.15 bugs with MultiWorkerMirroredStrategy, worked around for this model and strategy only.

    1. fit builds the model from a batch it averages with strategy.reduce, which this strategy
       rejects ("Attempt to convert a value (PerReplica...)"): build it from one local batch instead.
    2. Each step's logs (scalars) are averaged with strategy.reduce("MEAN", v, axis=0), which fails
       on a scalar ("Invalid reduction dimension 0"): reduce scalars with axis=None.
    """
    if info.distribute != "multi_worker":
        return
    strategy = info.strategy
    batch = next(iter(dataset))

    def build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=batch)

    reduce = strategy.reduce

    def reduce_scalars_whole(reduce_op, value, axis=None):
        local = strategy.experimental_local_results(value)[0] if hasattr(value, "values") else value
        return reduce(reduce_op, value, axis=None if getattr(local.shape, "rank", None) == 0 else axis)

    model._maybe_symbolic_build = build
    strategy.reduce = reduce_scalars_whole


def _write_metrics(config, run, recorder, status, seconds, info, model, datasets, plan, previous,
                   stopped_by: str | None = None, phases: list | None = None) -> dict[str, Any]:
    # A resumed run's wall time includes the epochs of the earlier sessions.
    seconds += sum(row.get("seconds", 0.0) for row in previous)
    metrics = _summarise(config, recorder.rows, status, seconds, recorder, info, model)
    metrics.update(train_images=len(datasets.train_files), val_images=len(datasets.val_files),
                   test_images=len(datasets.test_files), classes=datasets.num_classes, skipped_files=len(plan.bad_files()))
    if stopped_by:
        metrics["stopped_by"] = stopped_by  # SIGINT (Ctrl-C) or SIGTERM
    if phases:
        metrics["phases"] = [{"phase": p.description, "epochs": [p.first_epoch + 1, p.last_epoch]} for p in phases]
    write_json(run / layout.METRICS, metrics)
    return metrics


def checkpoint_bytes(model) -> int:
    """Disk space a run needs for its checkpoints: best.keras plus a backup (weights and optimizer slots), with room to rename."""
    return int(model.count_params()) * 4 * 3 * 2 + (1 << 20)


def resume_command(run: Path) -> str:
    """The exact command that continues `run`."""
    try:
        shown = Path(run).resolve().relative_to(Path.cwd())
    except ValueError:
        shown = Path(run).resolve()
    return shlex.join(["imgcls", "train", "--resume", str(shown)])


def _interrupted_message(run: Path, recorder, stopped_by: str) -> str:
    saved = checkpoints.backup_epoch(run)
    what = "Ctrl-C" if stopped_by == "SIGINT" else stopped_by
    if recorder.started_epoch > saved:
        done = {0: "no epoch had finished", 1: "epoch 1 is saved"}.get(saved, f"epochs 1-{saved} are saved")
        epoch = f"epoch {recorder.started_epoch} was abandoned ({done})"
    else:
        epoch = f"stopped after epoch {saved}, which is saved"
    return f"interrupted ({what}): {epoch}; resume with: {resume_command(run)}"


def _history_until(run: Path, epoch: int) -> list[dict[str, float]]:
    """history.csv's rows up to `epoch`: a row written after the last backup is trained again."""
    rows = layout.read_history(run) if (Path(run) / layout.HISTORY_CSV).is_file() else []
    return [{**row, "epoch": int(row["epoch"])} for row in rows if int(row["epoch"]) <= epoch]


def _record_resume(run: Path, config: Config, command: str) -> None:
    """config.yaml keeps the run's settings (overridden ones with --force) and notes each resume's command."""
    saved = layout.read_config(run)
    resolved = {**config.to_dict(), "imgcls": saved.get("imgcls", {})}
    resolved["imgcls"]["resumed"] = [*resolved["imgcls"].get("resumed", []), command]
    write_yaml(run / layout.CONFIG, resolved)
    layout.record_process(run)
    # The earlier session's summary: the run trains again, and `imgcls runs` must say so.
    (run / layout.METRICS).unlink(missing_ok=True)


@contextmanager
def _sigterm_raises_interrupt():
    """SIGTERM (kill, a scheduler's pre-emption) stops training like Ctrl-C: artifacts written, exit 143."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    signal = "SIGTERM"


@dataclass
class Phase:
    """One `fit` of a run: its epochs (Keras numbering: first_epoch is 0-based) and what trains."""

    description: str
    train: TrainConfig  # optimizer, learning rate and schedule of this phase
    first_epoch: int
    last_epoch: int
    trainable: str | int  # the backbone's trainable part: all | none | N top layers
    schedule: dict = field(default_factory=dict)


def _phases(config: Config, steps_per_epoch: int, replicas: int = 1) -> list[Phase]:
    """One phase, or two for transfer learning: head alone with the backbone frozen, then fine-tuning."""
    from imgcls.optim import fine_tune_train_config, resolve_schedule

    train = config.train
    if train.fine_tune is None:
        return [Phase("all layers", train, 0, train.epochs, "all", resolve_schedule(train, steps_per_epoch, replicas))]
    tune = fine_tune_train_config(train)
    unfreeze = train.fine_tune.unfreeze
    return [
        Phase("head only, backbone frozen", train, 0, train.epochs, "none", resolve_schedule(train, steps_per_epoch, replicas)),
        Phase(f"fine-tuning, {'whole backbone' if unfreeze == 'all' else f'top {unfreeze} backbone layers'} unfrozen "
              f"at learning rate {tune.learning_rate:g}", tune, train.epochs, train.epochs + tune.epochs, unfreeze,
              resolve_schedule(tune, steps_per_epoch, replicas)),
    ]


def _phase_of(phases: list[Phase], epochs_done: int) -> int:
    """Index of the phase that trained epoch `epochs_done` (1-based; 0: none yet), where a resumed run continues."""
    return next((i for i, p in enumerate(phases) if epochs_done <= p.last_epoch), len(phases) - 1)


def _prepare_phase(model, phase: Phase, config: Config, num_classes: int, info, steps_per_epoch: int) -> None:
    """Freeze what the phase keeps fixed and compile with the phase's optimizer (Keras needs a new compile after either)."""
    from imgcls.models.backbone import set_backbone_trainable
    from imgcls.models import build_loss
    from imgcls.optim import build_metrics, build_optimizer

    if config.train.fine_tune is not None:
        set_backbone_trainable(model, phase.trainable)
    model.compile(
        optimizer=build_optimizer(phase.train, steps_per_epoch, info.replicas),
        loss=build_loss(config),
        metrics=build_metrics(config, num_classes),
        jit_compile=info.jit_compile,
    )


def _with_ema(callbacks: list, config: Config, keras, resumed: bool = False) -> list:
    """Fresh EMA callbacks around the run's own: first the swap, last the guard (see imgcls.callbacks)."""
    if not config.train.ema:
        return callbacks
    from imgcls.callbacks import ema_callbacks

    swap, keep = ema_callbacks(keras, resumed)
    return [swap, *callbacks, keep]


def _write_run_start(config, run, plan, phases, info, command) -> None:
    """Everything needed to understand, audit and repeat the run, written before the first step."""
    resolved = config.to_dict()
    resolved["imgcls"] = {
        "version": imgcls.__version__,
        "tensorflow": tf_version(),
        "keras": __import__("keras").__version__,
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "command": command,
        "device": info.device,
        "precision": info.precision,
        "jit_compile": info.jit_compile,
        "distribute": {"strategy": info.distribute, "replicas": info.replicas,
                       "global_batch_size": config.data.batch_size * info.replicas},
        "learning_rate_schedule": phases[0].schedule,
        **({"fine_tune_learning_rate_schedule": phases[1].schedule} if len(phases) > 1 else {}),
        "data_dir": str(Path(config.data.dir).resolve()),
        "data_git": data_git_commit(Path(config.data.dir)),
        "cache": plan.cache.mode,
    }
    write_yaml(run / layout.CONFIG, resolved)
    write_json(run / layout.CLASSES, plan.class_names)
    write_csv(run / layout.SPLIT, plan.split_rows())
    write_skipped(plan, run / layout.SKIPPED)
    if plan.duplicates:
        write_csv(run / layout.DUPLICATES, [
            {"subset": d.subset, "path": plan.relative(d.path), "same_as_subset": d.same_as_subset,
             "same_as": plan.relative(d.same_as), "dropped": d.dropped} for d in plan.duplicates])


def package_versions() -> dict[str, str]:
    """Installed versions of what decides a run's numbers (what `pip freeze` would say about them)."""
    from importlib import metadata

    versions = {}
    for name in ("tensorflow", "keras", "numpy", "pillow", "pydantic", "h5py"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass  # e.g. tensorflow-cpu or tf-nightly instead of tensorflow
    return versions


def data_git_commit(folder: Path) -> dict[str, Any] | None:
    """The commit of the git repository holding the data folder, and whether its files differ from it; None outside git."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--", ".").strip())
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, no commit yet
        return None
    return {"commit": commit, "dirty": dirty}


def tf_version() -> str:
    return import_tensorflow().__version__


def _build_callbacks(config: Config, run: Path, recorder, keras, restored: dict | None = None):
    """History, best.keras, early stopping, LR on plateau, TensorBoard; last the per-epoch backup (see checkpoints)."""
    cb = config.callbacks
    checkpoint = checkpoints.best_model_checkpoint(
        keras, run / layout.MODEL, monitor=cb.checkpoint.monitor,
        mode=monitor_mode(cb.checkpoint.monitor, cb.checkpoint.mode), save_best_only=True, verbose=0,
    )
    callbacks = [recorder.as_keras_callback(keras), checkpoint]
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
    stateful = [c for c in callbacks if checkpoints.is_stateful(c)]
    callbacks.append(checkpoints.epoch_backup(keras, run, stateful, restored))
    return callbacks, early_stopping, clock


class EpochRecorder:
    """Adds `lr` and `seconds` to each epoch's logs and rewrites history.csv after every epoch."""

    def __init__(self, path: Path, train_images: int, rows: list[dict[str, float]] = ()):
        self.path = path
        self.train_images = train_images
        self.rows: list[dict[str, float]] = list(rows)  # a resumed run's earlier epochs
        self.started_epoch = 0  # 1-based number of the epoch in progress or last begun
        self.train_seconds: list[float] = []  # training phase only, validation excluded

    def as_keras_callback(self, keras):
        from imgcls.optim import current_learning_rate

        recorder = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                recorder.started_epoch = epoch + 1
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
                write_csv(recorder.path, recorder.rows)

        return _Callback()

    def images_per_second(self) -> float | None:
        """Steady-state training throughput: the first epoch (decode, cache fill, tracing) is left out."""
        steady = self.train_seconds[1:] or self.train_seconds
        return round(self.train_images / statistics.median(steady), 1) if steady else None


def _summarise(config, rows, status, wall_time, recorder, info, model) -> dict[str, Any]:
    monitor = config.callbacks.checkpoint.monitor
    best = best_row(rows, monitor, config.callbacks.checkpoint.mode)
    return {
        "status": status,
        "monitor": monitor,
        "best_epoch": int(best["epoch"]) if best else None,
        "best": {k: v for k, v in best.items() if k not in ("epoch", "seconds")} if best else {},
        "epochs_run": len(rows),
        "epochs_planned": config.total_epochs,
        "wall_time_s": round(wall_time, 2),
        "train_images_per_s": recorder.images_per_second(),
        "total_params": int(model.count_params()),
        "device": info.device,
        "precision": info.precision,
    }
