"""What training writes into its run folder besides the checkpoints and history.csv (contract: docs/runs.md).

    write_run_start   before the first step: config.yaml (with how the run was made), classes.json,
                      split.csv, skipped_files.txt, duplicates.csv
    record_resume     a resumed run: its command in config.yaml, its process, no stale metrics.json
    write_metrics     at the end: metrics.json, the run's summary
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgcls.data.report import write_skipped
from imgcls.files import write_csv, write_json, write_yaml
from imgcls.run import layout
from imgcls.run.provenance import data_git_commit, versions
from imgcls.run.status import best_row
from imgcls.training.callbacks import HistoryWriter
from imgcls.models.architecture import draw_architecture
from imgcls.training.session import Session


def write_run_start(session: Session) -> None:
    """Everything needed to understand, audit and repeat the run, written before the first step."""
    config, info, plan, run, phases = session.config, session.info, session.plan, session.run, session.phases
    resolved = config.to_dict()
    resolved["imgcls"] = {
        **versions(),
        "command": session.command,
        "device": info.device,
        "precision": info.precision,
        "jit_compile": info.jit_compile,
        "distribute": {"strategy": info.distribute, "replicas": info.replicas,
                       "global_batch_size": config.data.batch_size * info.replicas},
        "learning_rate_schedule": phases[0].schedule,
        **({"fine_tune_learning_rate_schedule": phases[1].schedule} if len(phases) > 1 else {}),
        "data_dir": str(plan.data_dir.resolve()),
        **({"labels_file": str(Path(config.data.labels_file).resolve())} if config.data.labels_file else {}),
        **({"dataset": plan.origin} if plan.origin else {}),
        "data_git": data_git_commit(plan.data_dir),
        "cache": plan.cache.mode,
    }
    write_yaml(run / layout.CONFIG, resolved)
    write_json(run / layout.CLASSES, plan.class_names)
    draw_architecture(session.model, run / layout.MODEL_PNG)  # a fraction of a second, for a paper or slides
    write_csv(run / layout.SPLIT, plan.split_rows())
    write_skipped(plan, run / layout.SKIPPED)
    if plan.duplicates:
        write_csv(run / layout.DUPLICATES, [
            {"subset": d.subset, "path": plan.relative(d.path), "same_as_subset": d.same_as_subset,
             "same_as": plan.relative(d.same_as), "dropped": d.dropped} for d in plan.duplicates])


def record_resume(session: Session) -> None:
    """config.yaml keeps the run's settings (overridden ones with --force) and notes each resume's command."""
    run = session.run
    saved = layout.read_config(run)
    resolved = {**session.config.to_dict(), "imgcls": saved.get("imgcls", {})}
    resolved["imgcls"]["resumed"] = [*resolved["imgcls"].get("resumed", []), session.command]
    write_yaml(run / layout.CONFIG, resolved)
    layout.record_process(run)
    # The earlier session's summary: the run trains again, and `imgcls runs` must say so.
    (run / layout.METRICS).unlink(missing_ok=True)


def write_metrics(session: Session, history: HistoryWriter, status: str, seconds: float,
                  stopped_by: str | None = None) -> dict[str, Any]:
    """metrics.json: how the run ended, its best epoch, sizes and speed. `seconds`: this session's training time."""
    config, datasets = session.config, session.datasets
    monitor = config.callbacks.checkpoint.monitor
    best = best_row(history.rows, monitor, config.callbacks.checkpoint.mode)
    earlier = [row for row in history.rows if row["epoch"] <= session.first_epoch]  # a resumed run's earlier sessions
    metrics = {
        "status": status,
        "monitor": monitor,
        "best_epoch": int(best["epoch"]) if best else None,
        "best": {k: v for k, v in best.items() if k not in ("epoch", "seconds")} if best else {},
        "epochs_run": len(history.rows),
        "epochs_planned": config.total_epochs if session.budget is None else session.budget.planned_total(),
        "wall_time_s": round(seconds + sum(row.get("seconds", 0.0) for row in earlier), 2),
        "train_images_per_s": history.images_per_second(last_epoch_cut=session.budget is not None and session.budget.cut),
        "total_params": int(session.model.count_params()),
        "device": session.info.device,
        "precision": session.info.precision,
        "train_images": len(datasets.train_files), "val_images": len(datasets.val_files),
        "test_images": len(datasets.test_files), "classes": datasets.num_classes,
        "skipped_files": len(session.plan.bad_files()),
    }
    if session.budget is not None:  # train.epochs was the cap; the plan fitted the time budget
        metrics.update(epochs_estimated=session.budget.estimated, epochs_cap=config.total_epochs,
                       time_limit_minutes=config.train.time_limit_minutes)
    if stopped_by:
        metrics["stopped_by"] = stopped_by  # SIGINT (Ctrl-C) or SIGTERM
    metrics["phases"] = [{"phase": p.description, "epochs": [p.first_epoch + 1, p.last_epoch]} for p in session.phases]
    write_json(session.run / layout.METRICS, metrics)
    return metrics


def checkpoint_bytes(model) -> int:
    """Disk space a run needs for its checkpoints: best.keras plus a backup (weights and optimizer slots), with room to rename."""
    return int(model.count_params()) * 4 * 3 * 2 + (1 << 20)
