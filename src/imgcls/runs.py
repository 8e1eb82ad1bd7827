"""Run folders: where a training run's artifacts live, and how to find them again.

    runs/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml     the fully resolved config, with imgcls and TensorFlow versions
        classes.json    class names in output order
        split.csv       every image used: path (relative to its data folder), class, subset (train, val, test)
        skipped_files.txt  bad images left out: path relative to the data folder, a tab, the reason
        duplicates.csv  files byte-identical across subsets (only when there are any)
        best.keras      the best epoch's full model (raw 0-255 pixels in, probabilities out)
        history.csv     one row per epoch: epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds
        history.png     accuracy and loss curves
        metrics.json    best epoch and its metrics, epochs run, wall time, images/s, status
        split.csv       every image (path relative to its data folder), its class and subset (train, val, test)
        process.json    host and process id of the training process (tells a crashed run from a running one)
        eval.json       `imgcls evaluate` on the val split: every figure it prints (eval_test.json for test)
        confusion_matrix.png, confusion_matrix_normalized.png, misclassified.png   its plots
        export/         models written by `imgcls export`, one folder per format
    runs/latest         symlink to the newest run (a one-line pointer file where symlinks are impossible)

Every file is written to a temporary name in the same folder and renamed into
place, so a crash leaves the old file or the new one, never half of one.
This module imports no TensorFlow: `predict`, `plot`, `evaluate` and `imgcls runs` read it.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from imgcls.config import monitor_mode
from imgcls.errors import ImgclsError
from imgcls.files import atomic_file, read_json, write_json

LATEST = "latest"
CONFIG = "config.yaml"
CLASSES = "classes.json"
SPLIT = "split.csv"
SKIPPED = "skipped_files.txt"
DUPLICATES = "duplicates.csv"
MODEL = "best.keras"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
METRICS = "metrics.json"
SPLIT = "split.csv"
PROCESS = "process.json"
EVAL = "eval.json"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_NORMALIZED_PNG = "confusion_matrix_normalized.png"
MISCLASSIFIED_PNG = "misclassified.png"
STATUSES = ("finished", "stopped_early", "time_limit", "interrupted", "failed", "running", "unknown")
EXPORT = "export"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------- creating runs


def check_run_name(name: str) -> str:
    """A run name becomes a folder name: it must not escape the runs folder."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ImgclsError(f"run name {name!r}: use letters, digits, '.', '_' and '-' only (it becomes a folder name)")
    return name


def create_run(runs_dir: Path, name: str, bytes_needed: int = 0) -> Path:
    """Make `runs_dir/<name>-<timestamp>/` (never reusing a folder) and point `latest` at it.

    `bytes_needed`: the checkpoints' size; a folder without that much room fails here, before training.
    """
    check_run_name(name)
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImgclsError(f"cannot create runs folder {runs_dir}: {exc.strerror}; choose another with --runs-dir") from None
    check_room(runs_dir, bytes_needed)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        run = runs_dir / (f"{name}-{stamp}" if attempt == 1 else f"{name}-{stamp}-{attempt}")
        try:
            run.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise ImgclsError(f"cannot create run folder {run}: {exc.strerror}; choose another --runs-dir") from None
    record_process(run)
    point_latest(runs_dir, run)
    return run


def check_room(folder: Path, bytes_needed: int) -> None:
    """Fail before training, not at the first checkpoint, when `folder` is read-only or too full."""
    folder = Path(folder)
    probe = folder / f".imgcls-write-test.{os.getpid()}"
    try:
        probe.write_bytes(b"")  # os.access says yes to root on a read-only folder
        probe.unlink()
    except OSError as exc:
        raise ImgclsError(f"{folder}: cannot write here ({exc.strerror}); choose another --runs-dir") from None
    free = shutil.disk_usage(folder).free
    if free < bytes_needed:
        raise ImgclsError(f"{folder}: {free / 2**20:,.1f} MiB free, but the checkpoints need about "
                          f"{bytes_needed / 2**20:,.1f} MiB; free some space or choose another --runs-dir")


def record_process(run: Path) -> None:
    """Note which process trains `run`: a run without metrics.json is running only while it lives."""
    write_json(Path(run) / PROCESS, {"host": socket.gethostname(), "pid": os.getpid(),
                                     "started": datetime.now().isoformat(timespec="seconds")})


def point_latest(runs_dir: Path, run: Path) -> None:
    """Atomically make `runs_dir/latest` refer to `run`."""
    latest = runs_dir / LATEST
    if latest.is_dir() and not latest.is_symlink():
        raise ImgclsError(f"{latest} is a folder, not imgcls' pointer to the newest run; rename it")
    with atomic_file(latest) as tmp:
        try:
            tmp.symlink_to(run.name, target_is_directory=True)
        except OSError:  # e.g. Windows without developer mode, some network drives
            tmp.write_text(run.name + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- finding runs


def resolve_run(run: Path | str | None, runs_dir: Path | str = "runs") -> Path:
    """The run folder that `run` names (default: runs/latest), checked to be a run."""
    path = Path(run) if run is not None else Path(runs_dir) / LATEST
    if path.is_file() and not (path / CONFIG).exists():
        # A pointer file written where symlinks are impossible.
        path = path.parent / path.read_text(encoding="utf-8").strip()
    if not path.exists():
        if run is None:
            raise ImgclsError(f"no runs yet in {runs_dir}/ (train one with: imgcls train configs/digits.yaml, or pass --run RUN)")
        raise ImgclsError(f"run not found: {path}")
    if not (path / CONFIG).is_file():
        raise ImgclsError(f"{path} is not an imgcls run folder (it has no {CONFIG}); give a folder under runs/")
    return path.resolve()


def list_runs(runs_dir: Path) -> list[Path]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink() and (p / CONFIG).is_file())


# --------------------------------------------------------------------------- reading runs


def read_config(run: Path) -> dict[str, Any]:
    return yaml.safe_load((Path(run) / CONFIG).read_text(encoding="utf-8"))


def read_classes(run: Path) -> list[str]:
    path = Path(run) / CLASSES
    if not path.is_file():
        raise ImgclsError(f"{run}: no {CLASSES}; the run did not get far enough to record its classes")
    return read_json(path)


def read_history(run: Path) -> list[dict[str, float]]:
    path = Path(run) / HISTORY_CSV
    if not path.is_file():
        raise ImgclsError(f"{run}: no {HISTORY_CSV} yet (the run has not finished an epoch)")
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def read_split(run: Path) -> list[dict[str, str]]:
    """split.csv's rows: path (relative to the subset's data folder), class, subset."""
    path = Path(run) / SPLIT
    if not path.is_file():
        raise ImgclsError(f"{run}: no {SPLIT}; the run did not get far enough to record its split")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def subset_root(run: Path, subset: str) -> Path:
    """The folder split.csv's paths of `subset` are relative to.

    val_dir and test_dir subsets are listed from their own folder, the rest from
    data.dir, whose absolute path training recorded, so any working folder works.
    """
    config = read_config(run)
    data = config["data"]
    own = data.get(f"{subset}_dir")
    return Path(own) if own else Path((config.get("imgcls") or {}).get("data_dir") or data["dir"])


def subset_images(run: Path, subset: str) -> list[tuple[Path, str]]:
    """(image path, class) of one subset of split.csv; [] when the run has no split.csv."""
    if not (Path(run) / SPLIT).is_file():
        return []
    root = subset_root(run, subset)
    return [(root / row["path"], row["class"]) for row in read_split(run) if row["subset"] == subset]


def read_metrics(run: Path) -> dict[str, Any] | None:
    """metrics.json, or None while the run trains (or when its process died before writing it)."""
    path = Path(run) / METRICS
    return read_json(path) if path.is_file() else None


# --------------------------------------------------------------------------- summarising runs


def best_row(rows: list[dict[str, float]], monitor: str, mode: str) -> dict[str, float] | None:
    """The epoch best.keras holds: the first best one, as ModelCheckpoint saves only on strict improvement.

    NaN never improves on anything, for ModelCheckpoint as here.
    """
    scored = [r for r in rows if monitor in r and not math.isnan(r[monitor])]
    if not scored:
        return None
    return (max if monitor_mode(monitor, mode) == "max" else min)(scored, key=lambda r: r[monitor])


def best_epoch(run: Path) -> dict[str, float] | None:
    """The history row of the checkpointed epoch: from metrics.json, else from history.csv and the config."""
    history = read_history(run) if (Path(run) / HISTORY_CSV).is_file() else []
    metrics = read_metrics(run)
    if metrics and metrics.get("best_epoch") is not None:
        return next((r for r in history if int(r["epoch"]) == metrics["best_epoch"]),
                    {"epoch": metrics["best_epoch"], **metrics.get("best", {})})
    checkpoint = (read_config(run).get("callbacks") or {}).get("checkpoint") or {}
    return best_row(history, checkpoint.get("monitor", "val_accuracy"), checkpoint.get("mode", "auto"))


def run_status(run: Path) -> str:
    """metrics.json's status; without it: running while the training process lives, else failed.

    Ctrl-C and normal ends both write metrics.json, so a run whose process is
    gone without one crashed, was killed (SIGKILL, out of memory) or lost power:
    that is `failed`. `unknown` when the process ran on another host.
    """
    metrics = read_metrics(run)
    if metrics:
        return metrics.get("status", "unknown")
    path = Path(run) / PROCESS
    if not path.is_file():
        return "failed"
    process = read_json(path)
    if process.get("host") != socket.gethostname() or os.name == "nt":  # os.kill(pid, 0) would kill on Windows
        return "unknown"
    try:
        os.kill(int(process["pid"]), 0)
    except ProcessLookupError:
        return "failed"
    except PermissionError:  # alive, owned by another user
        return "running"
    return "running"


_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")


def describe_run(run: Path) -> dict[str, Any]:
    """One line of `imgcls runs`: name, date, model, epochs run, best val accuracy, wall time, status."""
    run = Path(run)
    config = read_config(run)
    metrics = read_metrics(run) or {}
    history = read_history(run) if (run / HISTORY_CSV).is_file() else []
    best = best_epoch(run) or {}
    stamp = _STAMP.search(run.name)
    started = (datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S") if stamp
               else datetime.fromtimestamp((run / CONFIG).stat().st_mtime))
    wall_time = metrics.get("wall_time_s")
    if wall_time is None and history:
        wall_time = round(sum(r.get("seconds", 0.0) for r in history), 2)  # completed epochs only
    return {
        "name": run.name,
        "date": started.isoformat(sep=" ", timespec="minutes"),
        "model": (config.get("model") or {}).get("name"),
        "epochs_run": metrics.get("epochs_run", len(history)),
        "epochs_planned": (config.get("train") or {}).get("epochs"),
        "best_epoch": int(best["epoch"]) if "epoch" in best else None,
        "best_val_accuracy": best.get("val_accuracy"),
        "wall_time_s": wall_time,
        "status": run_status(run),
        "path": str(run),
    }
