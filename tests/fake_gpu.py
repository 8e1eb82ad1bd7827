"""Run one `imgcls` command as if this machine had a GPU, recording TensorFlow's device calls.

    python tests/fake_gpu.py EVENTS.json predict image.png --run RUN

There is no GPU here (nor in CI): TensorFlow is told it has one, of compute
capability 8.0, and the calls that would set it up (memory growth, visible
devices) are recorded instead of made. So is the moment TensorFlow
initialises its devices, which its first op or model does: every set-up call
must come before it, or on a real GPU it would fail or come too late. The
events are written to EVENTS.json when the command ends.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorflow.python.eager import context  # noqa: E402

GPU = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
events: list[list] = []
visible, growth = [GPU], {}
real_list, real_visible, real_initialise = (tf.config.list_physical_devices, tf.config.get_visible_devices,
                                            context.Context.ensure_initialized)


def list_physical_devices(device_type=None):
    return [GPU] if device_type == "GPU" else real_list(device_type)


def get_visible_devices(device_type=None):
    return list(visible) if device_type == "GPU" else real_visible(device_type)


def set_visible_devices(devices, device_type=None):
    events.append(["set_visible_devices", [d.name for d in devices], device_type])
    if device_type == "GPU":
        visible[:] = devices


def set_memory_growth(device, enable):
    events.append(["set_memory_growth", device.name, enable])
    growth[device.name] = enable


def ensure_initialized(self):
    if not self._initialized:
        events.append(["devices initialised"])
    return real_initialise(self)


tf.config.list_physical_devices = list_physical_devices
tf.config.get_visible_devices = get_visible_devices
tf.config.set_visible_devices = set_visible_devices
tf.config.experimental.set_memory_growth = set_memory_growth
tf.config.experimental.get_memory_growth = lambda device: growth.get(device.name, False)
tf.config.experimental.get_device_details = lambda device: {"compute_capability": (8, 0), "device_name": "fake"}
context.Context.ensure_initialized = ensure_initialized

if __name__ == "__main__":
    from imgcls.cli import app

    try:
        app(args=sys.argv[2:], prog_name="imgcls")
    finally:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(events, f)
