"""Phases: one `fit` each. One phase trains all layers; transfer learning trains the head alone
(backbone frozen), then fine-tunes (the backbone, or its top N layers, unfrozen at a lower rate)."""

from __future__ import annotations

from dataclasses import dataclass, field

from imgcls.config import Config, TrainConfig
from imgcls.models import build_loss
from imgcls.models.backbone import set_backbone_trainable
from imgcls.training.optim import build_metrics, build_optimizer, fine_tune_train_config, resolve_schedule
from imgcls.training.session import Session


@dataclass
class Phase:
    """One `fit` of a run: its epochs (Keras numbering: first_epoch is 0-based) and what trains."""

    description: str
    train: TrainConfig  # optimizer, learning rate and schedule of this phase
    first_epoch: int
    last_epoch: int
    trainable: str | int  # the backbone's trainable part: all | none | N top layers
    schedule: dict = field(default_factory=dict)  # the resolved learning-rate schedule, in steps


def phases_for(config: Config, steps_per_epoch: int, replicas: int = 1) -> list[Phase]:
    """One phase, or two for transfer learning: head alone with the backbone frozen, then fine-tuning."""
    train = config.train
    if train.fine_tune is None:
        return [Phase("all layers", train, 0, train.epochs, "all", resolve_schedule(train, steps_per_epoch, replicas))]
    tune = fine_tune_train_config(train)
    unfreeze = train.fine_tune.unfreeze
    unfrozen = "whole backbone" if unfreeze == "all" else f"top {unfreeze} backbone layers"
    return [
        Phase("head only, backbone frozen", train, 0, train.epochs, "none", resolve_schedule(train, steps_per_epoch, replicas)),
        Phase(f"fine-tuning, {unfrozen} unfrozen at learning rate {tune.learning_rate:g}", tune, train.epochs,
              train.epochs + tune.epochs, unfreeze, resolve_schedule(tune, steps_per_epoch, replicas)),
    ]


def phase_continuing_after(phases: list[Phase], epochs_done: int) -> int:
    """Index of the phase a run continues in after `epochs_done` epochs (a phase that is complete counts as its own)."""
    return next((i for i, p in enumerate(phases) if epochs_done <= p.last_epoch), len(phases) - 1)


def prepare_phase(session: Session, phase: Phase) -> None:
    """Freeze what the phase keeps fixed and compile with the phase's optimizer (Keras needs a new compile after either)."""
    config, info = session.config, session.info
    if config.train.fine_tune is not None:
        set_backbone_trainable(session.model, phase.trainable)
    session.model.compile(
        optimizer=build_optimizer(phase.train, session.steps_per_epoch, info.replicas),
        loss=build_loss(config),
        metrics=build_metrics(config, session.num_classes),
        jit_compile=info.jit_compile,
    )
