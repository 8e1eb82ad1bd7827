"""Runtime: devices, precision, seeds, determinism.

`setup_runtime` must run before anything else touches TensorFlow: GPU memory
growth and visible devices can only be set before the GPUs are initialised.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

from imgcls.config import RuntimeConfig
from imgcls.errors import ImgclsError


@contextmanager
def quiet_native_stderr():
    """Hide what TensorFlow's C++ start-up writes to stderr ("Could not find cuda drivers", ...).

    Those lines bypass TF_CPP_MIN_LOG_LEVEL; they are noise on a CPU machine.
    Python exceptions are unaffected. Set TF_CPP_MIN_LOG_LEVEL yourself to see them.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or sys.stderr is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow quietly (see `quiet_native_stderr`)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with quiet_native_stderr():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the first device query logs cuInit failures
    return tf


@dataclass
class RuntimeInfo:
    device: str
    precision: str

    def __str__(self) -> str:
        return f"device {self.device}, precision {self.precision}"


def setup_runtime(runtime: RuntimeConfig) -> RuntimeInfo:
    tf = import_tensorflow()
    import keras

    gpus = _select_gpus(tf, runtime.device)
    for gpu in gpus:
        # GPU-only: without it TensorFlow grabs all GPU memory up front.
        tf.config.experimental.set_memory_growth(gpu, True)

    keras.utils.set_random_seed(runtime.seed)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(runtime.precision)

    device = ", ".join(g.name.replace("/physical_device:", "") for g in gpus) if gpus else "CPU"
    return RuntimeInfo(device=device, precision=runtime.precision)


def _select_gpus(tf, device) -> list:
    """Make only the requested GPUs visible and return them."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        chosen = []
    elif device == "gpu" and not gpus:
        raise ImgclsError("runtime.device: gpu, but TensorFlow sees no GPU (install imgcls[gpu] and a CUDA driver, or use device: auto)")
    elif isinstance(device, int):
        if device >= len(gpus):
            raise ImgclsError(f"runtime.device: GPU {device} requested, but TensorFlow sees {len(gpus)} GPU(s)")
        chosen = [gpus[device]]
    else:
        chosen = gpus
    if chosen != gpus:
        tf.config.set_visible_devices(chosen, "GPU")
    return chosen
