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
import errno
import io
import json
import os
import re
import shutil
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from imgcls.data.folders import RUNS_MARKER
from imgcls.errors import ImgclsError, first_line
from imgcls.files import atomic_file, load_yaml, write_json

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
LOCK = "process.lock"  # held by the training process while it lives
EVAL = "eval.json"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_NORMALIZED_PNG = "confusion_matrix_normalized.png"
MISCLASSIFIED_PNG = "misclassified.png"
MISCLASSIFIED_CAM_PNG = "misclassified_cam.png"
MODEL_PNG = "model.png"
STATUSES = ("finished", "stopped_early", "time_limit", "interrupted", "failed", "running", "unknown", "unreadable")
EXPORT = "export"
TENSORBOARD = "tensorboard"

try:
    import fcntl
except ImportError:  # Windows: no flock; the process id alone decides
    fcntl = None
_HELD: dict[str, int] = {}  # this process' run locks: run folder -> file descriptor

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
    (runs_dir / RUNS_MARKER).touch()  # so a data folder that holds this runs folder never takes it for a class
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
    """Note which process trains `run`, and hold the run's lock while it does (see `training_holds`).

    A PID alone cannot tell: it is reused, and in a container the trainer is
    PID 1, always alive. The kernel releases the lock when the process ends,
    however it ends (SIGKILL and out-of-memory included).
    """
    write_json(Path(run) / PROCESS, {"host": socket.gethostname(), "pid": os.getpid(),
                                     "started": datetime.now().isoformat(timespec="seconds")})
    if fcntl is None or str(Path(run).resolve()) in _HELD:
        return
    fd = os.open(Path(run) / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise ImgclsError(f"{run}: another process is training this run; stop it first") from None
        return  # a file system without locks: the process id decides, as for runs made before the lock
    _HELD[str(Path(run).resolve())] = fd


def release_run(run: Path) -> None:
    """Give up the run's lock: this process no longer trains it."""
    fd = _HELD.pop(str(Path(run).resolve()), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def training_holds(run: Path) -> bool | None:
    """Whether a live process holds the run's training lock; None when the run has no lock to ask (older runs, Windows)."""
    path = Path(run) / LOCK
    if fcntl is None or not path.is_file():
        return None
    if str(Path(run).resolve()) in _HELD:
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


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
    if path.name == LATEST and path.is_file():  # a pointer file, where symlinks are impossible
        path = path.parent / path.read_text(encoding="utf-8", errors="replace").strip()[:255]
    if not path.exists():
        if run is None:
            others = [p.name for p in list_runs(runs_dir)]
            if others:
                raise ImgclsError(f"{Path(runs_dir) / LATEST} points to a run that is gone; give one with --run "
                                  f"(runs here: {', '.join(others[-5:])})")
            raise ImgclsError(f"no runs yet in {runs_dir}/ (train one with: imgcls train configs/digits.yaml, or pass --run RUN)")
        raise ImgclsError(f"run not found: {path}")
    if not path.is_dir():
        hint = ("a model file is for --model" if path.suffix in (".keras", ".tflite")
                else "a config file is for `imgcls train CONFIG`, without --resume")
        raise ImgclsError(f"{path} is a file, not a run folder; give a folder under runs/ ({hint})")
    if not (path / CONFIG).is_file():
        raise ImgclsError(f"{path} is not an imgcls run folder (it has no {CONFIG}); give a folder under runs/")
    return path.resolve()


def list_runs(runs_dir: Path) -> list[Path]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink() and (p / CONFIG).is_file())


# --------------------------------------------------------------------------- reading runs


def _read(run: Path, name: str, parse, missing: str):
    """A run file parsed; a missing or damaged one is one line that names it (it may have been edited or cut short)."""
    path = Path(run) / name
    if not path.is_file():
        raise ImgclsError(f"{run}: no {name}; {missing}")
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ImgclsError(f"{path}: damaged ({first_line(exc, 120)}); restore it from a backup copy, or train again") from None


def _typed(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"expected {what}, found {type(value).__name__}")
    return value


def read_config(run: Path) -> dict[str, Any]:
    def parse(text: str) -> dict[str, Any]:
        config = _typed(load_yaml(text), dict, "a mapping")
        _typed(config.get("data"), dict, "a data: section")
        return config

    return _read(run, CONFIG, parse, "give a run folder")


def read_classes(run: Path) -> list[str]:
    def parse(text: str) -> list[str]:
        names = _typed(json.loads(text), list, "a list of class names")
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError("expected distinct, non-empty class names")
        return names

    return _read(run, CLASSES, parse, "the run did not get far enough to record its classes")


def plot_path(runs: list[Path]) -> Path:
    """Where `imgcls plot` writes unless told: a run's own history.png, or for several runs a comparison
    beside the first one's curves, never over them (training drew those)."""
    if len(runs) == 1:
        return runs[0] / HISTORY_PNG
    others = "+".join(run.name for run in runs[1:])
    if len(others) > 150:  # a file name has 255 bytes
        others = f"{len(runs) - 1}-runs"
    return runs[0] / f"compare-with-{others}.png"


def read_history(run: Path) -> list[dict[str, float]]:
    def parse(text: str) -> list[dict[str, float]]:
        rows = []
        for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            try:
                rows.append({k: float(v) for k, v in row.items() if k is not None and v not in ("", None)})
            except ValueError:
                raise ValueError(f"line {number} is not numbers") from None
            if "epoch" not in rows[-1]:
                raise ValueError(f"line {number} has no epoch")
        return rows

    return _read(run, HISTORY_CSV, parse, "the run has not finished an epoch yet")


def read_split(run: Path) -> list[dict[str, str]]:
    """split.csv's rows: path (relative to the subset's data folder), class, subset."""
    def parse(text: str) -> list[dict[str, str]]:
        rows = list(csv.DictReader(io.StringIO(text)))
        if any(not {"path", "class", "subset"} <= set(row) or None in row.values() for row in rows):
            raise ValueError("expected the columns path, class, subset on every line")
        return rows

    return _read(run, SPLIT, parse, "the run did not get far enough to record its split")


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
    if not (Path(run) / METRICS).is_file():
        return None
    return _read(run, METRICS, lambda text: _typed(json.loads(text), dict, "a mapping"), "")
