"""Training: from a validated config to a finished run folder. Importing this package imports TensorFlow.

    trainer.py      train(): one straight path, top to bottom
    session.py      what a run holds while it trains
    phases.py       one fit, or head-then-fine-tune for transfer learning; compiling for a phase
    callbacks.py    history.csv, the time limit, EMA, and the order of every callback
    checkpoints.py  best.keras (float32, atomic) and the per-epoch backup to resume from
    optim.py        optimizer, learning-rate schedules (epochs to steps), metrics
    record.py       config.yaml, classes.json, split.csv ... at the start; metrics.json at the end
    distribute.py   multi-worker workarounds

TensorFlow is imported quietly here, once, without touching devices
(`setup_runtime` sets them up before the first op), so the modules below
subclass Keras at the top level.
"""

from imgcls.runtime import import_tensorflow_quietly

import_tensorflow_quietly()

from imgcls.training.trainer import train  # noqa: E402

__all__ = ["train"]
