"""`imgcls train --resume [RUN]`: may this run continue, and with which config?

A run continues from its newest backup (`imgcls.training.checkpoints`) with the
config it recorded. Anything that would make the continuation a different
experiment is refused unless --force: a `--set` that changes a key, or a data
folder whose split no longer matches split.csv. A run that ended (finished,
stopped early, at its time limit) has nothing to resume: its backup was
deleted when it ended. No TensorFlow here: these answers are instant.

The training side (restoring the backup into the model) is
`imgcls.training.checkpoints.restore_state`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.config import Config, load_config
from imgcls.data.plan import DataPlan, plan_data
from imgcls.errors import ImgclsError
from imgcls.files import read_json
from imgcls.run import layout
from imgcls.run.status import run_status

DONE = ("finished", "stopped_early", "time_limit")  # the run ended and deleted its backup


@dataclass
class Resume:
    run: Path
    config: Config
    status: str  # the run's status before resuming (interrupted, failed, finished, ...)
    plan: DataPlan | None = None  # the data, checked to split as split.csv says (None when the run is done)

    @property
    def done(self) -> bool:
        return self.status in DONE


def prepare_resume(run: Path | None, runs_dir: Path, overrides: list[str], force: bool) -> Resume:
    """The run to continue and its config, or ImgclsError saying why it cannot continue."""
    folder = layout.resolve_run(run, runs_dir)
    status = run_status(folder)
    if status == "running" and not force:
        process = read_json(folder / layout.PROCESS)
        raise ImgclsError(f"{folder}: still training (process {process.get('pid')} on {process.get('host')}); "
                          "stop it first, or wait for it to finish (--force resumes anyway, if you are sure it is not)")
    # data.dir (and a labels file) as written may be relative to where training started; the run also recorded
    # them absolute.
    saved = layout.read_config(folder)
    recorded_paths = {"dir": "data_dir", "labels_file": "labels_file"}
    moved = []
    for key, absolute_key in recorded_paths.items():
        written, absolute = saved["data"].get(key), (saved.get("imgcls") or {}).get(absolute_key)
        if written and absolute and not Path(written).exists():
            moved.append(f"data.{key}={absolute}")
    recorded = load_config(folder / layout.CONFIG, moved)
    config = load_config(folder / layout.CONFIG, moved + list(overrides))
    changed = config_differences(recorded.to_dict(), config.to_dict())
    if changed and not force:
        raise ImgclsError(f"{folder}: --set changes {', '.join(changed)} from the run's config.yaml; "
                          "a resumed run must be the same experiment (add --force to resume anyway)")
    if status in DONE:
        return Resume(folder, config, status)
    plan = plan_data(config)
    check_same_split(folder, plan.split_rows(), force)
    return Resume(folder, config, status, plan)


def check_same_split(run: Path, split_rows: list[dict[str, str]], force: bool) -> None:
    """The data folder must still split into split.csv's images, or the resumed epochs train on other data."""
    recorded = {(r["path"], r["class"], r["subset"]) for r in layout.read_split(run)}
    now = {(r["path"], r["class"], r["subset"]) for r in split_rows}
    if recorded != now and not force:
        relabelled = {path for path, _, _ in recorded} & {path for path, _, _ in now - recorded}
        changes = [f"{len(relabelled)} images changed class or subset"] if relabelled else []
        added, gone = len(now - recorded) - len(relabelled), len(recorded - now) - len(relabelled)
        changes += [f"{added} images new or moved"] if added else []
        changes += [f"{gone} gone or moved"] if gone else []
        raise ImgclsError(f"{run}: the data changed since the run started ({', '.join(changes)}, compared with "
                          "split.csv); add --force to resume anyway")


def config_differences(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, e.g. ['train.epochs', 'model.filters']."""
    keys = [k for k in before if k in after] + [k for k in after if k not in before] + [k for k in before if k not in after]
    differing = []
    for key in dict.fromkeys(keys):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differing += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differing.append(f"{prefix}{key}")
    return differing


def resume_command(run: Path) -> str:
    """The exact command that continues `run`."""
    try:
        shown = Path(run).resolve().relative_to(Path.cwd())
    except ValueError:
        shown = Path(run).resolve()
    return shlex.join(["imgcls", "train", "--resume", str(shown)])


def history_until(run: Path, epoch: int) -> list[dict[str, float]]:
    """history.csv's rows up to `epoch`: a row written after the last backup is trained again."""
    rows = layout.read_history(run) if (Path(run) / layout.HISTORY_CSV).is_file() else []
    return [{**row, "epoch": int(row["epoch"])} for row in rows if int(row["epoch"]) <= epoch]
