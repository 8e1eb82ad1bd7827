"""The optimizer, its learning-rate schedule, the loss and the metrics.

Schedules given in epochs are converted here with the *real* steps per
epoch, and the resolved schedule object is what the optimizer receives: a
schedule built but never used cannot happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

    from imgcls.config import Config, TrainConfig


def resolve_schedule(train: TrainConfig, steps_per_epoch: int, replicas: int = 1) -> dict[str, Any]:
    """The schedule as Keras arguments, every period in optimizer steps.

    `replicas` multiplies every rate when train.scale_learning_rate is linear
    (a global batch `replicas` times larger takes proportionally larger steps).
    """
    s = train.schedule
    scale = replicas if train.scale_learning_rate == "linear" else 1
    lr = train.learning_rate * scale
    total = train.epochs * steps_per_epoch

    def steps(n_steps, n_epochs):
        return int(n_steps) if n_steps is not None else max(1, round(n_epochs * steps_per_epoch))

    if s.name == "exponential_decay":
        return {"name": s.name, "initial_learning_rate": lr, "decay_steps": steps(s.decay_steps, s.decay_epochs),
                "decay_rate": s.decay_rate, "staircase": s.staircase}
    if s.name == "cosine_decay":
        warmup = steps(s.warmup_steps, s.warmup_epochs) if (s.warmup_steps or s.warmup_epochs) else 0
        decay = steps(s.decay_steps, s.decay_epochs) if (s.decay_steps or s.decay_epochs) else max(1, total - warmup)
        return {"name": s.name, "learning_rate": lr, "warmup_steps": warmup, "decay_steps": decay, "alpha": s.alpha}
    if s.name == "piecewise_constant":
        bounds = s.boundaries if s.boundaries is not None else [round(e * steps_per_epoch) for e in s.boundary_epochs]
        return {"name": s.name, "boundaries": [int(b) for b in bounds], "values": [v * scale for v in s.values]}
    return {"name": "none", "learning_rate": lr}


def build_learning_rate(resolved: dict[str, Any]):
    """A float, or a Keras LearningRateSchedule, from `resolve_schedule`'s output."""
    from keras.optimizers import schedules

    name = resolved["name"]
    if name == "exponential_decay":
        return schedules.ExponentialDecay(resolved["initial_learning_rate"], resolved["decay_steps"],
                                          resolved["decay_rate"], staircase=resolved["staircase"])
    if name == "cosine_decay":
        if resolved["warmup_steps"]:
            # Keras warms up linearly from initial_learning_rate to warmup_target.
            return schedules.CosineDecay(0.0, resolved["decay_steps"], alpha=resolved["alpha"],
                                         warmup_target=resolved["learning_rate"], warmup_steps=resolved["warmup_steps"])
        return schedules.CosineDecay(resolved["learning_rate"], resolved["decay_steps"], alpha=resolved["alpha"])
    if name == "piecewise_constant":
        return schedules.PiecewiseConstantDecay(resolved["boundaries"], resolved["values"])
    return resolved["learning_rate"]


def follows_budget(resolved: dict[str, Any], train: TrainConfig) -> bool:
    """Whether a time budget moves the schedule's end: a cosine decay that runs to the last epoch does.

    Exponential and piecewise decays, and a cosine with its own decay_epochs,
    are given in absolute periods: a rate, not a run length. Laid over a
    budget with `train.epochs` as a cap of, say, 1000, they would decay the
    rate to nothing within the first epochs.
    """
    s = train.schedule
    return bool(train.time_limit_minutes) and resolved["name"] == "cosine_decay" and not (s.decay_steps or s.decay_epochs)


def build_optimizer(train: TrainConfig, steps_per_epoch: int, replicas: int = 1) -> keras.optimizers.Optimizer:
    import keras

    resolved = resolve_schedule(train, steps_per_epoch, replicas)
    learning_rate = build_learning_rate(resolved)
    if follows_budget(resolved, train):  # imgcls.training.budget moves its end to the epochs that fit
        from imgcls.training.budget import FittedSchedule

        learning_rate = FittedSchedule(learning_rate, resolved["warmup_steps"], train.epochs * steps_per_epoch)
    common: dict[str, Any] = {"learning_rate": learning_rate, "clipnorm": train.clipnorm,
                              "use_ema": train.ema, "ema_momentum": train.ema_momentum}
    if train.weight_decay is not None:
        common["weight_decay"] = train.weight_decay
    if train.optimizer == "sgd":
        momentum = 0.9 if train.momentum is None else train.momentum
        return keras.optimizers.SGD(momentum=momentum, nesterov=train.nesterov, **common)
    if train.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=train.momentum or 0.0, **common)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(**common)
    return keras.optimizers.Adam(**common)


def fine_tune_train_config(train: TrainConfig) -> TrainConfig:
    """Phase 2 of transfer learning: train.schedule re-run over the fine-tuning epochs at fine_tune.learning_rate."""
    return train.model_copy(update={"epochs": train.fine_tune.epochs, "learning_rate": train.fine_tune.learning_rate})


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer uses at its current step (schedules evaluated)."""
    return float(optimizer.learning_rate.numpy() if hasattr(optimizer.learning_rate, "numpy") else optimizer.learning_rate)


def build_metrics(config: Config, num_classes: int) -> list:
    """Metric objects named exactly as the config names them (so history columns match)."""
    import keras

    mode = config.data.label_mode
    sparse = mode == "int"
    metrics = []
    for name in config.train.metrics:
        if name == "accuracy":
            cls = {"int": keras.metrics.SparseCategoricalAccuracy, "categorical": keras.metrics.CategoricalAccuracy,
                   "binary": keras.metrics.BinaryAccuracy}[mode]
            metrics.append(cls(name="accuracy"))
        elif name == "top5_accuracy":
            cls = keras.metrics.SparseTopKCategoricalAccuracy if sparse else keras.metrics.TopKCategoricalAccuracy
            metrics.append(cls(k=min(5, num_classes), name="top5_accuracy"))
        else:  # auc, precision, recall: config validation ensured one-hot or binary labels
            cls = {"auc": keras.metrics.AUC, "precision": keras.metrics.Precision, "recall": keras.metrics.Recall}[name]
            metrics.append(cls(name=name))
    return metrics
