"""Learning-rate schedules are resolved in steps and really reach the optimizer; losses match the output."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.config import load_config
from imgcls.models import build_loss
from imgcls.training.optim import build_optimizer, current_learning_rate, resolve_schedule


def train_config(**train):
    return load_config(raw={"data": {"dir": "x"}, "train": train}).train


def test_decay_given_in_epochs_is_converted_with_the_real_steps_per_epoch():
    train = train_config(learning_rate=0.1, schedule={"name": "exponential_decay", "decay_epochs": 2, "decay_rate": 0.5})
    assert resolve_schedule(train, steps_per_epoch=45)["decay_steps"] == 90


def test_decay_given_in_steps_is_used_as_is():
    train = train_config(schedule={"name": "exponential_decay", "decay_steps": 60, "decay_rate": 0.96, "staircase": True})
    assert resolve_schedule(train, steps_per_epoch=45)["decay_steps"] == 60


def test_the_optimizer_uses_the_schedule_not_the_bare_number():
    """The seeds' bug: a schedule built but the constant passed to Adam."""
    train = train_config(learning_rate=0.1, schedule={"name": "exponential_decay", "decay_steps": 10,
                                                      "decay_rate": 0.5, "staircase": True})
    optimizer = build_optimizer(train, steps_per_epoch=10)
    assert current_learning_rate(optimizer) == pytest.approx(0.1)
    optimizer.iterations.assign(20)
    assert current_learning_rate(optimizer) == pytest.approx(0.025)


def test_cosine_decay_warms_up_then_decays_to_alpha():
    train = train_config(epochs=10, learning_rate=0.01, schedule={"name": "cosine_decay", "warmup_epochs": 1, "alpha": 0.1})
    resolved = resolve_schedule(train, steps_per_epoch=10)
    assert resolved["warmup_steps"] == 10 and resolved["decay_steps"] == 90
    optimizer = build_optimizer(train, steps_per_epoch=10)
    rates = []
    for step in (0, 5, 10, 100):
        optimizer.iterations.assign(step)
        rates.append(current_learning_rate(optimizer))
    assert rates[0] < rates[1] < rates[2] == pytest.approx(0.01)
    assert rates[3] == pytest.approx(0.001)


def test_piecewise_constant_boundaries_in_epochs():
    train = train_config(schedule={"name": "piecewise_constant", "boundary_epochs": [2, 4], "values": [0.1, 0.01, 0.001]})
    assert resolve_schedule(train, steps_per_epoch=5)["boundaries"] == [10, 20]


def test_piecewise_values_must_be_one_more_than_boundaries():
    with pytest.raises(Exception, match="values needs 3 entries"):
        train_config(schedule={"name": "piecewise_constant", "boundaries": [1, 2], "values": [0.1]})


@pytest.mark.parametrize("name, cls", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD"), ("rmsprop", "RMSprop")])
def test_each_optimizer_with_clipnorm(name, cls):
    optimizer = build_optimizer(train_config(optimizer=name, clipnorm=10), steps_per_epoch=1)
    assert type(optimizer).__name__ == cls and optimizer.clipnorm == 10


def test_sgd_gets_momentum_and_nesterov():
    optimizer = build_optimizer(train_config(optimizer="sgd", momentum=0.8, nesterov=True), steps_per_epoch=1)
    assert optimizer.momentum == 0.8 and optimizer.nesterov


@pytest.mark.parametrize("label_mode, loss_cls", [
    ("int", "SparseCategoricalCrossentropy"), ("categorical", "CategoricalCrossentropy"), ("binary", "BinaryCrossentropy"),
])
def test_loss_matches_label_mode_and_takes_probabilities(label_mode, loss_cls):
    config = load_config(raw={"data": {"dir": "x", "label_mode": label_mode}})
    loss = build_loss(config)
    assert type(loss).__name__ == loss_cls
    assert loss.get_config()["from_logits"] is False


def test_label_smoothing_reaches_the_loss():
    config = load_config(raw={"data": {"dir": "x", "label_mode": "categorical"}, "train": {"label_smoothing": 0.1}})
    loss = build_loss(config)
    assert loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    assert np.isfinite(float(loss(np.eye(3, dtype="float32"), np.full((3, 3), 1 / 3, dtype="float32"))))
