"""What one training run holds while it trains, in one place instead of threaded through parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from imgcls.config import Config
from imgcls.data.pipeline import Datasets
from imgcls.data.plan import DataPlan
from imgcls.runtime import RuntimeInfo


@dataclass
class Session:
    config: Config
    plan: DataPlan
    info: RuntimeInfo  # devices, precision, XLA, the distribution strategy (imgcls.runtime)
    log: Callable
    command: str = ""  # the command line, recorded in config.yaml
    resume: Path | None = None  # the run folder to continue, or None for a new run
    first_epoch: int = 0  # epochs already done (a resumed run's backup)
    datasets: Datasets | None = None
    steps_per_epoch: int = 0
    phases: list = field(default_factory=list)  # imgcls.training.phases.Phase, one or two
    model: Any = None  # the keras.Model being trained
    run: Path | None = None  # the run folder (a scratch folder on a multi-worker run's other workers)
    budget: Any = None  # imgcls.training.budget.TimeBudget, with train.time_limit_minutes
    signals_before: dict = field(default_factory=dict)  # Ctrl-C's and SIGTERM's handlers before training

    @property
    def num_classes(self) -> int:
        return self.plan.num_classes
