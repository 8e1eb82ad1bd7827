"""Run folders: where a training run's artifacts live, and how to find them again.

    runs/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml     the fully resolved config, with imgcls and TensorFlow versions
        classes.json    class names in output order
        best.keras      the best epoch's full model (raw 0-255 pixels in, probabilities out)
        history.csv     one row per epoch: epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds
        history.png     accuracy and loss curves
        metrics.json    best epoch and its metrics, epochs run, wall time, images/s, status
        split.csv       every image once: path (relative to the data folder), class, subset (train, val)
        export/         models written by `imgcls export`, one folder per format
    runs/latest         symlink to the newest run (a one-line pointer file where symlinks are impossible)

Every file is written to a temporary name in the same folder and renamed into
place, so a crash leaves the old file or the new one, never half of one.
This module imports no TensorFlow: `predict`, `plot` and listing runs read it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import yaml

from imgcls.errors import ImgclsError

LATEST = "latest"
CONFIG = "config.yaml"
CLASSES = "classes.json"
MODEL = "best.keras"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
METRICS = "metrics.json"
SPLIT = "split.csv"
EXPORT = "export"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------- creating runs


def create_run(runs_dir: Path, name: str) -> Path:
    """Make `runs_dir/<name>-<timestamp>/` (never reusing a folder) and point `latest` at it."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ImgclsError(f"run name {name!r}: use letters, digits, '.', '_' and '-' only (it becomes a folder name)")
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImgclsError(f"cannot create runs folder {runs_dir}: {exc.strerror}; choose another with --runs-dir") from None
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
    point_latest(runs_dir, run)
    return run


def point_latest(runs_dir: Path, run: Path) -> None:
    """Atomically make `runs_dir/latest` refer to `run`."""
    latest = runs_dir / LATEST
    tmp = runs_dir / f".{LATEST}.{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run.name, target_is_directory=True)
    except OSError:  # e.g. Windows without developer mode, some network drives
        tmp.write_text(run.name + "\n", encoding="utf-8")
    if latest.is_dir() and not latest.is_symlink():
        raise ImgclsError(f"{latest} is a folder, not imgcls' pointer to the newest run; rename it")
    os.replace(tmp, latest)


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


# --------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` that is renamed onto it when the block succeeds."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- reading runs


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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


def read_split(run: Path, subset: str) -> list[tuple[Path, str]]:
    """(image path, class) of one subset of split.csv, resolved against the run's data folder; [] without one."""
    path = Path(run) / SPLIT
    if not path.is_file():
        return []
    config = read_config(run)
    data = config["data"]
    if subset == "val" and data.get("val_dir"):
        root = Path(data["val_dir"])
    else:  # the absolute path recorded at training time, so any working folder finds the images
        root = Path((config.get("imgcls") or {}).get("data_dir") or data["dir"])
    with open(path, newline="", encoding="utf-8") as f:
        return [(root / row["path"], row["class"]) for row in csv.DictReader(f) if row["subset"] == subset]
