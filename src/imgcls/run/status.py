"""A run's state from its files: the best epoch, whether it is running, finished or dead, its line in `imgcls runs`."""

from __future__ import annotations

import math
import os
import re
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from imgcls.config import monitor_mode
from imgcls.errors import ImgclsError
from imgcls.files import read_json
from imgcls.run.layout import (
    CONFIG, HISTORY_CSV, PROCESS, list_runs, read_config, read_history, read_metrics, training_holds,
)

# Crossentropy on Keras' clipped probabilities is at most -ln(1e-7), about 16 an image: a loss past this
# comes from weights that exploded (through their regularization terms), however finite it still is.
EXPLODED_LOSS = 1e6


def loss_diverged(value) -> bool:
    """Whether a loss says training diverged: NaN, infinite, or exploded past EXPLODED_LOSS."""
    value = float(value)
    return not math.isfinite(value) or value > EXPLODED_LOSS


def best_row(rows: list[dict[str, float]], monitor: str, mode: str) -> dict[str, float] | None:
    """The epoch best.keras holds: the first best one, as ModelCheckpoint saves only on strict improvement.

    NaN never improves on anything, for ModelCheckpoint as here; an epoch whose loss diverged is never the best.
    """
    scored = [r for r in rows if monitor in r and not math.isnan(r[monitor])
              and not any(loss_diverged(r[loss]) for loss in ("loss", "val_loss") if loss in r)]
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
    that is `failed`. Whether the process lives is asked of the run's lock
    (`layout.training_holds`), which a reused process id cannot fake; runs
    made before the lock fall back to the process id. `unknown` when the
    process ran on another host.
    """
    metrics = read_metrics(run)
    if metrics:
        return metrics.get("status", "unknown")
    path = Path(run) / PROCESS
    if not path.is_file():
        return "failed"
    try:
        process = read_json(path)
        host, pid = process.get("host"), int(process["pid"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unknown"  # a damaged process.json: nothing to tell by
    if host != socket.gethostname():
        return "unknown"
    held = training_holds(run)
    if held is not None:
        return "running" if held else "failed"
    return "running" if _alive(pid) else "failed"


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would kill on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


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
        # metrics.json's plan: fitted to a time budget, fine-tuning's epochs included; else the config's epochs
        "epochs_planned": metrics.get("epochs_planned", (config.get("train") or {}).get("epochs")),
        "best_epoch": int(best["epoch"]) if "epoch" in best else None,
        "best_val_accuracy": best.get("val_accuracy"),
        "wall_time_s": wall_time,
        "status": run_status(run),
        "path": str(run),
    }


def describe_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """`describe_run` of every run in `runs_dir`; a run whose files are damaged is listed as unreadable, with why."""
    described = []
    for run in list_runs(runs_dir):
        try:
            described.append(describe_run(run))
        except ImgclsError as exc:
            described.append({"name": run.name, "date": None, "model": None, "epochs_run": None, "epochs_planned": None,
                              "best_epoch": None, "best_val_accuracy": None, "wall_time_s": None, "status": "unreadable",
                              "problem": str(exc), "path": str(run)})
    return described


STATUS_STYLE = {"finished": "green", "stopped_early": "green", "interrupted": "yellow", "failed": "red", "running": "cyan",
                "unreadable": "red"}


def runs_table(described: list[dict[str, Any]]):
    """The `imgcls runs` table (a rich Table) of `describe_run` rows."""
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold", show_edge=False)
    for column in ("run", "date", "model", "epochs", "best val acc", "wall time", "status"):
        table.add_column(column, justify="right" if column in ("epochs", "best val acc", "wall time") else "left",
                         no_wrap=column != "run")
    for r in described:
        accuracy = f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-"
        epochs = f"{r['epochs_run']}/{r['epochs_planned']}" if r["epochs_run"] is not None else "-"
        table.add_row(r["name"], r["date"] or "-", r["model"] or "-", epochs, accuracy,
                      _duration(r["wall_time_s"]), Text(r["status"].replace("_", " "), style=STATUS_STYLE.get(r["status"], "")))
    return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
