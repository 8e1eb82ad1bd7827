"""Every private Keras name imgcls relies on, checked against the installed Keras.

Keras does not promise these; if an upgrade removes one, this test names it
and the module that needs a new way to do the same. pyproject.toml sets no
upper bound on Keras, so this is the line of defence.
"""

from __future__ import annotations

import keras
import pytest

PRIVATE_NAMES = [
    # imgcls.training.checkpoints.BestModelCheckpoint: overrides the save, keeps Keras' decision of when
    (keras.callbacks.ModelCheckpoint, "_save_model", "training/checkpoints.py"),
    (keras.callbacks.ModelCheckpoint, "_should_save_model", "training/checkpoints.py"),
    # imgcls.training.callbacks.with_ema / KeepEMAOnStop: EMA weights in the model after an early stop, and after a resume
    (keras.callbacks.SwapEMAWeights(swap_on_epoch=True), "_ema_weights_in_model", "training/callbacks.py"),
    (keras.callbacks.SwapEMAWeights, "_finalize_ema_values", "training/callbacks.py"),
    # imgcls.training.distribute: the multi-worker workarounds
    (keras.Model, "_symbolic_build", "training/distribute.py"),
    (keras.Model, "_maybe_symbolic_build", "training/distribute.py"),
    # imgcls.infer.explain: a nested backbone's output in the outer graph (its .output is its own inner one)
    (keras.layers.Dense(1), "_inbound_nodes", "infer/explain.py"),
]


@pytest.mark.parametrize("owner, name, user", PRIVATE_NAMES, ids=[name for _, name, _ in PRIVATE_NAMES])
def test_the_private_keras_names_imgcls_uses_still_exist(owner, name, user):
    assert hasattr(owner, name), f"Keras {keras.__version__} has no {name} on {owner}: src/imgcls/{user} needs another way"


def test_model_checkpoint_still_saves_through_the_overridden_method(tmp_path):
    """The override only works while ModelCheckpoint's epoch end calls _save_model with these arguments."""
    import inspect

    assert list(inspect.signature(keras.callbacks.ModelCheckpoint._save_model).parameters) == ["self", "epoch", "batch", "logs"]
    assert "_save_model" in inspect.getsource(keras.callbacks.ModelCheckpoint.on_epoch_end)
