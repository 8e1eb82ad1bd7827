"""`imgcls train` as a function: a config (or a run to resume) checked, its data planned and reported, then trained.

    run, metrics = launch_training("configs/digits.yaml", ["train.epochs=3"], runs_dir="runs")
    run, metrics = launch_training(resume=True, runs_dir="runs")          # continue runs/latest

Everything up to the data report is instant and imports no TensorFlow, so a
typo in the config or a broken data folder answers at once; `imgcls.training`
(and TensorFlow) is imported only after that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from imgcls.errors import ImgclsError

# How a run that has nothing to resume ended, as `imgcls train --resume` says it.
ENDED = {"finished": "finished", "stopped_early": "stopped early", "time_limit": "stopped at its time limit"}


def launch_training(config: Path | str | dict | Any = None, overrides: list[str] = (), *, runs_dir: Path | str = "runs",
                    name: str | None = None, resume: bool = False, force: bool = False, callbacks: list = (),
                    log: Callable | None = None, command: str = "") -> tuple[Path, dict[str, Any]] | None:
    """Train `config` (a YAML file, a dict as the YAML would be, or a `Config`) with `--set` style `overrides`,
    or resume the run `config` names (default runs_dir/latest).

    Returns the run folder and its metrics.json, or None when the run to
    resume had already ended (the log says so). `callbacks`: Keras callbacks
    added to every fit after imgcls' own.
    """
    from imgcls.data.report import print_report, stderr_log
    from imgcls.run.layout import SKIPPED, check_run_name

    log = log or stderr_log()
    if resume:
        from imgcls.run.resume import prepare_resume

        if name is not None:
            raise ImgclsError("--name names a new run; --resume continues an existing one: give one of them")
        prepared = prepare_resume(config, Path(runs_dir), list(overrides), force)
        if prepared.done:
            log(f"{prepared.run}: already {ENDED[prepared.status]}; nothing to resume")
            return None
        cfg, plan, run_name, resume_run = prepared.config, prepared.plan, None, prepared.run
    else:
        from imgcls.config import load_config
        from imgcls.data.plan import plan_data

        if config is None:
            raise ImgclsError("give a config file, e.g. imgcls train configs/digits.yaml (or --resume to continue a run)")
        if isinstance(config, (str, Path)):
            cfg, default_name = load_config(config, list(overrides)), Path(config).stem
        else:
            raw = config if isinstance(config, dict) else config.to_dict()
            cfg = load_config(raw=raw, overrides=list(overrides))
            default_name = Path(str(cfg.data.dir)).resolve().name if cfg.data.dir else cfg.data.tfds.replace("/", "-")
        run_name = check_run_name(name or default_name)
        plan, resume_run = plan_data(cfg), None
    # The data report comes before TensorFlow's slow import, so data surprises show at once.
    print_report(plan, log, skipped_file=f"{SKIPPED} in the run folder")

    from imgcls.training import train

    return train(cfg, runs_dir, run_name, plan=plan, resume=resume_run, callbacks=list(callbacks), log=log, command=command)


def exit_code(metrics: dict[str, Any]) -> int:
    """How training ended, as an exit code: 2 when it failed (a user can fix that), 128 + the signal number when
    it was interrupted (the shell's convention), else 0."""
    if metrics["status"] == "failed":
        return 2
    if metrics["status"] != "interrupted":
        return 0
    return 143 if metrics.get("stopped_by") == "SIGTERM" else 130  # SIGTERM is 15, SIGINT (Ctrl-C) 2
