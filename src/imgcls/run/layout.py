"""The run folder: its file names, creating one, finding one, and reading its files.

    runs/<name>-<YYYYmmdd-HHMMSS>/    one folder per run, never reused
    runs/latest                       symlink to the newest run (a one-line pointer file where symlinks are impossible)

What each file holds and when it is written is the run-folder contract, in
docs/runs.md; the names below are the only place code spells them. Every file
is written with `imgcls.files` (temporary name, then rename). No TensorFlow:
predict, plot, evaluate and `imgcls runs` read runs through this module.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

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
PROCESS = "process.json"
EVAL = "eval.json"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_NORMALIZED_PNG = "confusion_matrix_normalized.png"
MISCLASSIFIED_PNG = "misclassified.png"
STATUSES = ("finished", "stopped_early", "time_limit", "interrupted", "failed", "running", "unknown")
EXPORT = "export"
TENSORBOARD = "tensorboard"

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
