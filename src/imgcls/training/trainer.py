"""Training: one straight path from a validated config to a finished run folder.

    data plan -> runtime -> datasets -> model (compiled for its phase) -> run folder -> fit, phase by phase
        -> metrics.json -> history.png and the evaluation of best.keras

What lands in the run folder, and when, is the run-folder contract in
docs/runs.md. A run interrupted by Ctrl-C or SIGTERM still writes its
metrics, and its message gives the command that resumes it; `resume`
continues such a run from its backup along the same path. Under
runtime.distribute the model is built in the strategy's scope and only the
chief process writes the run folder.
"""

from __future__ import annotations

import gc
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import keras

from imgcls.config import Config
from imgcls.data.pipeline import make_datasets, unreadable_image
from imgcls.data.plan import DataPlan, plan_data
from imgcls.data.report import print_report, stderr_log
from imgcls.errors import ImgclsError
from imgcls.models import build_model
from imgcls.run import layout
from imgcls.run.resume import history_until, resume_command
from imgcls.runtime import setup_runtime
from imgcls.training import checkpoints
from imgcls.training.budget import TimeBudget, relay_phases
from imgcls.training.callbacks import HistoryWriter, RunCallbacks, StopOnSignal, build_callbacks, with_ema
from imgcls.training.distribute import work_around_multi_worker_bugs
from imgcls.training.phases import phase_continuing_after, phases_for, prepare_phase
from imgcls.training.record import checkpoint_bytes, record_resume, write_metrics, write_run_start
from imgcls.training.session import Session


def train(config: Config, runs_dir: Path | str = "runs", name: str | None = None, *, plan: DataPlan | None = None,
          resume: Path | None = None, callbacks: list = (), log: Callable | None = None,
          command: str = "") -> tuple[Path, dict[str, Any]]:
    """Train `config` into a new run folder `runs_dir/<name>-<time>/`, or continue the run folder `resume`.

    Returns the run folder and what its metrics.json holds. `plan`: the data
    plan, when the caller made (and reported) it already. `callbacks`: Keras
    callbacks added to every fit after imgcls' own, so one that stops
    training finds the epoch already saved. `log`: where progress lines go
    (default: stderr).
    """
    log = log or stderr_log()
    # ---- the data: scanned, split and reported before anything else, so data problems show at once
    if plan is None:
        plan = plan_data(config)
        print_report(plan, log, skipped_file=f"{layout.SKIPPED} in the run folder")
    # ---- TensorFlow: devices, precision, seeds, threads, the distribution strategy
    info = setup_runtime(config.runtime, distribute=True)
    log(str(info))
    if resume and info.distribute == "multi_worker":
        raise ImgclsError("--resume: not supported with runtime.distribute: multi_worker (only the chief has the backup); "
                          "start a new run, or resume on one machine with --set runtime.distribute=none --force")
    session = Session(config, plan, info, log, command, resume, checkpoints.backup_epoch(resume) if resume else 0)
    # ---- the datasets: global batches, the training epochs from where a resumed run continues
    session.datasets = make_datasets(plan, config, session.first_epoch, replicas=info.replicas)
    session.steps_per_epoch = math.ceil(len(session.datasets.train_files) / (config.data.batch_size * info.replicas))
    _log_data(session)
    # ---- the model, compiled for the phase the run starts (or continues) in, in the strategy's scope
    session.phases = phases_for(config, session.steps_per_epoch, info.replicas)
    if resume:  # a budget may have ended a phase early: lay them out as they ran
        relay_phases(session.phases, checkpoints.saved_callback_state(resume, "TimeBudget").get("phase_ends", []))
    with info.scope():
        session.model = build_model(config, session.num_classes)
        prepare_phase(session, session.phases[phase_continuing_after(session.phases, session.first_epoch)])
    # ---- the run folder, only now that everything above worked: bad input leaves no empty run behind
    session.run = _run_folder(session, runs_dir, name)
    try:
        try:
            metrics = _fit(session, list(callbacks))
        finally:
            _let_go(session)
        if info.is_chief:
            # The evaluation loads best.keras and decodes the validation images again: let it reuse the
            # memory of the training model and the cached images instead of adding to it.
            session.model = session.datasets = None
            keras.backend.clear_session()
            gc.collect()
            _report(session.run, config, metrics, log)
    finally:
        _give_signals_back(session)  # only now, when the run was interrupted: its files are written
    return session.run, metrics


def _let_go(session: Session) -> None:
    """Whatever ended training: release the run folder and the mixed policy."""
    if not session.info.is_chief:
        shutil.rmtree(session.run, ignore_errors=True)
    layout.release_run(session.run)  # this process trains it no longer
    # The mixed policy is for training only: the evaluation, and whatever the caller builds next, get Keras' default.
    keras.mixed_precision.set_global_policy("float32")


def _log_data(session: Session) -> None:
    config, datasets, info, plan = session.config, session.datasets, session.info, session.plan
    test = f" and {len(datasets.test_files)} held-out test" if datasets.test_files else ""
    session.log(f"{datasets.num_classes} classes, {len(datasets.train_files)} training, {len(datasets.val_files)} "
                f"validation{test} images, {session.steps_per_epoch} steps per epoch")
    if info.replicas > 1:
        scaled = f"; learning rate x {info.replicas}" if config.train.scale_learning_rate == "linear" else ""
        session.log(f"global batch {config.data.batch_size * info.replicas} = {config.data.batch_size} per replica "
                    f"x {info.replicas} replicas{scaled}")
    if plan.class_weight:
        weights = ", ".join(f"{name} {plan.class_weight[i]:.3g}" for i, name in enumerate(plan.class_names))
        session.log(f"class weights (train.class_weight): {weights}")


def _run_folder(session: Session, runs_dir: Path | str, name: str | None) -> Path:
    """The resumed run's folder (checked for room), a new one, or a scratch folder for a multi-worker run's other workers.

    Those workers save too (their saves take part in the collective ops), into a folder deleted at the end.
    """
    if not session.info.is_chief:
        return Path(tempfile.mkdtemp(prefix="imgcls-worker-"))
    needed = checkpoint_bytes(session.model)
    if session.resume:
        layout.check_room(session.resume, needed)
        return Path(session.resume)
    return layout.create_run(Path(runs_dir), name or session.plan.data_dir.name, needed)


def _fit(session: Session, extra_callbacks: list) -> dict[str, Any]:
    """Fit phase by phase; then drop the backup (unless interrupted) and write metrics.json."""
    restored, earlier = _start(session)
    work_around_multi_worker_bugs(session.model, session.info, session.datasets.val)
    history = HistoryWriter(session.run / layout.HISTORY_CSV, len(session.datasets.train_files), earlier)
    if session.config.train.time_limit_minutes:
        session.budget = TimeBudget(session.config.train.time_limit_minutes, session.phases, session.steps_per_epoch,
                                    session.log)
    run_callbacks = build_callbacks(session.config, session.run, history, restored, extra_callbacks, session.budget)
    status, stopped_by = "finished", None
    start = time.perf_counter()
    try:
        with _signals_stop_training(session, run_callbacks.signals):
            _fit_phases(session, run_callbacks, resumed=bool(restored))
    except KeyboardInterrupt as exc:
        status, stopped_by = "interrupted", getattr(exc, "signal", "SIGINT")
        session.log(f"\n{_interrupted_message(session.run, history, stopped_by)}")
    except OSError as exc:  # a full disk or a vanished folder while saving: keep what was written before
        _write_failed(session, history, start)
        raise ImgclsError(f"{exc.filename or session.run}: {exc.strerror or exc}; training stopped, the last good "
                          f"best.keras and backup are intact; free space, then resume with: {resume_command(session.run)}") from None
    except Exception as exc:
        datasets = session.datasets
        problem = unreadable_image(exc, datasets.train_files + datasets.val_files + datasets.test_files)
        if problem is None:
            raise
        _write_failed(session, history, start)
        raise ImgclsError(f"a data file could not be read during training ({problem}); training stopped, the last good "
                          f"best.keras and backup are intact; restore or remove the file (the next scan leaves a removed "
                          f"one out), then resume with: {resume_command(session.run)}") from None
    status = _how_it_ended(session, run_callbacks, status)
    if status != "interrupted":
        checkpoints.drop_backup(session.run)
    metrics = write_metrics(session, history, status, time.perf_counter() - start, stopped_by)
    if not session.info.is_chief:
        task = session.info.task
        session.log(f"{task[0]} {task[1]}: {status} after {len(history.rows)} epochs; the chief wrote the run folder")
    return metrics


def _write_failed(session: Session, history: HistoryWriter, start: float) -> None:
    try:
        write_metrics(session, history, "failed", time.perf_counter() - start)
    except OSError:
        pass  # the disk is still full: `imgcls runs` shows the run as failed anyway (its process is gone)


def _start(session: Session) -> tuple[dict | None, list[dict[str, float]]]:
    """A new run's first files, or a resumed run's backup restored into the model: (restored state, earlier history)."""
    if session.info.is_chief:
        session.log(f"run folder: {session.run}")
    if not session.resume:
        write_run_start(session)
        return None, []
    with session.info.scope():
        restored = checkpoints.restore_state(session.model, session.run)
    step = f" (optimizer step {int(session.model.optimizer.iterations.numpy())})" if restored else \
        " (no epoch was backed up: from the start)"
    session.log(f"resuming after epoch {session.first_epoch} of {session.config.total_epochs}{step}")
    record_resume(session)
    return restored, history_until(session.run, session.first_epoch)


def _fit_phases(session: Session, run_callbacks: RunCallbacks, resumed: bool) -> None:
    """One `fit` per phase, from the phase the run continues in (prepared in `train`, a backup restored into it)."""
    config, info, phases = session.config, session.info, session.phases
    current = phase_continuing_after(phases, session.first_epoch)
    for index in range(current, len(phases)):
        phase, train_ds = phases[index], session.datasets.train
        if index > current:
            if session.budget is not None and session.budget.spent:
                break
            with info.scope():
                prepare_phase(session, phase)
            # The training dataset starts at a given epoch (its shuffles are seeded per epoch).
            train_ds = make_datasets(session.plan, config, phase.first_epoch, replicas=info.replicas).train
        if session.budget is not None:
            session.budget.begin_phase(index)
        initial_epoch = max(session.first_epoch, phase.first_epoch)
        if len(phases) > 1 and initial_epoch < phase.last_epoch:
            session.log(f"phase {index + 1} of {len(phases)}: {phase.description}, epochs {initial_epoch + 1}-{phase.last_epoch}")
        # A phase the backup completed still gets its (empty) fit: its end (EMA values, EarlyStopping's
        # best weights) happens as in an uninterrupted run. shuffle=False: the dataset reshuffles every epoch.
        session.model.fit(train_ds, validation_data=session.datasets.val, epochs=phase.last_epoch,
                          initial_epoch=initial_epoch, steps_per_epoch=session.steps_per_epoch,
                          class_weight=session.plan.class_weight, shuffle=False, verbose=1 if _live_display() else 2,
                          callbacks=with_ema(run_callbacks.all, config, resumed=resumed and index == current))


def _how_it_ended(session: Session, run_callbacks: RunCallbacks, status: str) -> str:
    """finished, unless the loss diverged, the time limit or early stopping ended it (or it was interrupted)."""
    if status != "finished":
        return status
    if run_callbacks.divergence.diverged:
        kept = "best.keras holds the best epoch before it" if (session.run / layout.MODEL).is_file() else "no model was kept"
        session.log(f"training failed: the loss diverged (NaN, infinite or over 1e6) at {run_callbacks.divergence.diverged}; {kept}. "
                    "Try a lower train.learning_rate, train.clipnorm (e.g. 1.0), or runtime.precision: float32")
        return "failed"
    if session.budget is not None and session.budget.spent:
        minutes, epochs = session.config.train.time_limit_minutes, len(run_callbacks.history.rows)
        if session.budget.cut:
            session.log(f"time limit: the budget of {minutes:g} min ended during epoch {epochs}, which was cut short "
                        "(one epoch takes longer than the budget); raise train.time_limit_minutes")
        else:
            session.log(f"time limit: {epochs} epoch{'s' if epochs != 1 else ''} fitted the budget of {minutes:g} min "
                        f"(train.epochs {session.config.total_epochs} was the cap)")
        return "time_limit"
    if run_callbacks.early_stopping is not None and run_callbacks.early_stopping.stopped_epoch > 0:
        return "stopped_early"
    epochs = len(run_callbacks.history.rows)
    if status == "finished" and epochs < session.config.total_epochs:  # a callback of the user's set stop_training
        session.log(f"stopped early by a callback after epoch {epochs} of {session.config.total_epochs}")
        return "stopped_early"
    return status


def _interrupted_message(run: Path, history: HistoryWriter, stopped_by: str) -> str:
    saved = checkpoints.backup_epoch(run)
    what = "Ctrl-C" if stopped_by == "SIGINT" else stopped_by
    if history.started_epoch > saved:
        done = {0: "no epoch had finished", 1: "epoch 1 is saved"}.get(saved, f"epochs 1-{saved} are saved")
        epoch = f"epoch {history.started_epoch} was abandoned ({done})"
    else:
        epoch = f"stopped after epoch {saved}, which is saved"
    return f"interrupted ({what}): {epoch}; resume with: {resume_command(run)}"


def _report(run: Path, config: Config, metrics: dict[str, Any], log: Callable) -> None:
    """history.png and the evaluation of best.keras: the last artifacts of a run."""
    from imgcls.infer.evaluate import evaluate_after_training
    from imgcls.plots import plot_history

    try:
        if metrics["epochs_run"]:
            plot_history([run], run / layout.HISTORY_PNG)
        evaluate_after_training(config, run, metrics["status"], log)
    except KeyboardInterrupt:  # training's own artifacts are complete: say so, and what is left to do
        log(f"\ninterrupted after training, which is {metrics['status'].replace('_', ' ')} and saved; the plot and "
            f"evaluation were not finished: imgcls plot {run} && imgcls evaluate {run}")
        raise


def _live_display() -> bool:
    """Keras' progress bar, redrawn in place, on a terminal and in Jupyter; a line per epoch in a log file."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _give_signals_back(session: Session) -> None:
    for signum, handler in session.signals_before.items():
        signal.signal(signum, handler)
    session.signals_before = {}


@contextmanager
def _signals_stop_training(session: Session, stopper: StopOnSignal):
    """Ctrl-C and SIGTERM (kill, a scheduler's pre-emption) stop training: artifacts written, exit 130 or 143.

    The handler notes the signal and `stopper` raises it at the next batch
    (see StopOnSignal for why not at once); a second signal before then
    raises where it lands. Once the run is stopping, further signals are
    ignored until its last files are written (`train` gives them back), so
    an impatient Ctrl-C cannot cut them short or print a traceback. A run
    that ends without a signal gets them back at once: Ctrl-C during the
    evaluation that follows stops that.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def note(signum, frame):
        if stopper.raised:
            return  # stopping already: the run's files are being written
        first = stopper.received is None
        stopper.received = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        if not first:
            stopper.raise_received()

    # SIGINT ignored on purpose (nohup, a worker) stays ignored.
    watched = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    session.signals_before = {s: signal.signal(s, note) for s in watched}
    try:
        yield
        stopper.raise_received()  # a signal after the last batch: still an interruption
    finally:
        if not stopper.raised:
            _give_signals_back(session)


class Terminated(KeyboardInterrupt):
    signal = "SIGTERM"
