"""Runtime: devices, precision, seeds, determinism, and the distribution strategy.

Every module reaches TensorFlow through `import_tensorflow`, which sets up
the GPUs (memory growth, the visible ones) on its first call: that must come
before anything else touches TensorFlow. `setup_runtime` (train, summary)
adds precision, seeds, threads and the distribution strategy.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from imgcls.config import RuntimeConfig, check_device
from imgcls.errors import ImgclsError


@contextmanager
def quiet_native_stderr():
    """Hide what TensorFlow's C++ start-up writes to stderr ("Could not find cuda drivers", ...).

    Those lines bypass TF_CPP_MIN_LOG_LEVEL; they are noise on a CPU machine.
    Python exceptions are unaffected. TF_CPP_MIN_LOG_LEVEL=0 or 1 (more than imgcls' own 2) shows them.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1") or sys.stderr is None:
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


def import_tensorflow(device: str | int | None = None):
    """TensorFlow, imported quietly, with this process' GPUs set up: the one way imgcls reaches TensorFlow.

    Memory growth and the visible GPUs can only be set before TensorFlow
    initialises its devices (its first op or model does), so every command
    comes here before anything else touches TensorFlow. Without memory growth
    TensorFlow takes all of a GPU's memory at once, and a predict beside a
    running training fails to allocate. `device` is runtime.device's value
    (auto | cpu | gpu | index); None keeps the process' choice (first: auto).
    """
    tf = import_tensorflow_quietly()
    _set_up_devices(tf, device)
    return tf


def import_tensorflow_quietly():
    """TensorFlow without its C++ start-up noise (see `quiet_native_stderr`); devices untouched.

    Importing does not set up devices, so `import_tensorflow(device)` may still
    follow; `imgcls.training` imports this way so its modules can subclass Keras.
    """
    if sys.modules.get("tensorflow") is not None:  # None: an import that failed, or was blocked
        return sys.modules["tensorflow"]
    with quiet_native_stderr():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
        except ModuleNotFoundError as exc:
            if exc.name != "tensorflow":  # TensorFlow is there but broken: its own traceback says why
                raise
            raise ImgclsError(f"{_command()} needs TensorFlow, which is not installed here: pip install "
                              "'imgcls[tensorflow]' (a .tflite model predicts without it: pip install 'imgcls[lite]')") from None

        tf.config.list_physical_devices("GPU")  # the first device query logs cuInit failures
    tf.get_logger().setLevel("ERROR")  # "Assets written to", retracing notes: noise in a terminal or a notebook
    return tf


def _command() -> str:
    """`imgcls train`, as this process was started, or `imgcls` (the Python API)."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if program in ("imgcls", "__main__.py") and len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        return f"imgcls {sys.argv[1]}"
    return "imgcls"


@dataclass
class _Devices:
    """The device choice of this process: TensorFlow takes it once, before its first op."""

    device: str | int | None = None  # runtime.device's value, None until set up
    gpus: list = field(default_factory=list)  # the GPUs in use, each with memory growth


_devices = _Devices()


def _set_up_devices(tf, device: str | int | None) -> list:
    if _devices.device is not None and device in (None, _devices.device):
        return _devices.gpus
    device = "auto" if device is None else device
    try:
        gpus = _select_gpus(tf, device)
        for gpu in gpus:
            if not tf.config.experimental.get_memory_growth(gpu):
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # "cannot be modified after being initialized"
        raise ImgclsError(f"device {device}: TensorFlow has set up its devices for {_devices.device} in this process "
                          "already, and cannot change them; use one device per process") from None
    _devices.device, _devices.gpus = device, gpus
    return gpus


def parse_device(text: str) -> str | int:
    """A --device argument as runtime.device takes it: auto | cpu | gpu | a GPU index."""
    try:
        return check_device(int(text) if text.strip().isdigit() else text.strip().lower())
    except ValueError as exc:
        raise ImgclsError(f"--device {text}: {exc}") from None


@dataclass
class RuntimeInfo:
    device: str
    precision: str
    jit_compile: bool
    why: str = ""  # how `auto` settings were decided
    strategy: Any = None  # a tf.distribute strategy, or None: TensorFlow's default (one device)
    distribute: str = "none"  # none | mirrored | multi_worker
    replicas: int = 1  # model copies that each take data.batch_size images per step
    task: tuple[str, int] | None = None  # multi_worker: this process' (type, index) in TF_CONFIG
    is_chief: bool = True  # the one process that writes the run folder

    def __str__(self) -> str:
        text = f"device {self.device}, precision {self.precision}" + (f" ({self.why})" if self.why else "")
        text += ", XLA" if self.jit_compile else ""
        if self.distribute != "none":
            text += f"; {self.distribute}: {self.replicas} replicas"
            if self.task:
                text += f", this is {self.task[0]} {self.task[1]}" + (" (chief: writes the run folder)" if self.is_chief else "")
        return text

    def scope(self):
        """Where model, optimizer and metrics must be built: the strategy's scope."""
        return self.strategy.scope() if self.strategy is not None else nullcontext()


def setup_runtime(runtime: RuntimeConfig, distribute: bool = False) -> RuntimeInfo:
    """Configure TensorFlow for `runtime`; `distribute`: also create runtime.distribute's strategy (training only)."""
    tf = import_tensorflow(runtime.device)
    import keras

    gpus = _devices.gpus  # set up by import_tensorflow
    _set_threads(tf, runtime)

    strategy, chosen, task = choose_strategy(tf, runtime.distribute if distribute else "none", gpus)
    keras.utils.set_random_seed(runtime.seed)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision, why = choose_precision(runtime.precision, [_compute_capability(tf, g) for g in gpus], cpu_flags())
    keras.mixed_precision.set_global_policy(precision)
    # XLA: a clear win on GPUs; on CPUs it measured several times slower per step (docs/benchmarks.md).
    jit = bool(gpus) if runtime.jit_compile == "auto" else runtime.jit_compile

    device = ", ".join(g.name.replace("/physical_device:", "") for g in gpus) if gpus else "CPU"
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    return RuntimeInfo(device=device, precision=precision, jit_compile=jit, why=why, strategy=strategy,
                       distribute=chosen, replicas=replicas, task=task, is_chief=is_chief(task, _tf_config()))


def choose_strategy(tf, distribute: str, gpus: list):
    """(strategy or None, what was chosen, this process' TF_CONFIG task) for `runtime.distribute`."""
    if distribute == "auto":
        distribute = "mirrored" if len(gpus) > 1 else "none"
    if distribute == "none":
        return None, "none", None
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(), "mirrored", None
    config = _tf_config()
    task = config.get("task") or {}
    if not config.get("cluster") or "type" not in task or "index" not in task:
        raise ImgclsError("runtime.distribute: multi_worker needs TF_CONFIG with a cluster and this process' task, e.g. "
                          '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    return tf.distribute.MultiWorkerMirroredStrategy(), "multi_worker", (task["type"], int(task["index"]))


def is_chief(task: tuple[str, int] | None, tf_config: dict) -> bool:
    """TensorFlow's convention: the `chief` task, or worker 0 when the cluster has no chief."""
    if task is None:
        return True
    kind, index = task
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in tf_config.get("cluster", {}))


def _tf_config() -> dict:
    text = os.environ.get("TF_CONFIG", "")
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ImgclsError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos})") from None


# What bf16 training did against float32 on each kind of CPU, measured with scripts/bench_runtime.py
# (figures, flags and command in docs/benchmarks.md). `auto` picks bf16 only where it was measured faster.
BF16_MEASURED = {
    "avx512_bf16": ("mixed_bfloat16", "bf16 measured faster than float32 on such a CPU"),
    "avx2": ("float32", "bf16 is emulated there, measured several times slower than float32"),
}
CPU_KINDS = {
    "amx": "CPU has amx_bf16 (AMX)",
    "avx512_bf16": "CPU has avx512_bf16, no AMX",
    "avx512": "CPU has avx512f, no bf16 instructions",
    "avx2": "CPU has avx2, no native bf16",
    "other": "no x86 CPU flags found (not Linux, or not x86)",
}


def cpu_kind(flags: set[str]) -> str:
    """The kind of CPU, as far as bf16 speed goes: a key of CPU_KINDS."""
    for kind, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return kind
    return "other"


def choose_precision(requested: str, gpu_capabilities: list[tuple[int, int] | None], flags: set[str]) -> tuple[str, str]:
    """The Keras dtype policy for `runtime.precision`, and why `auto` chose it.

    auto: mixed_float16 when every GPU has tensor cores (compute capability
    7.0+, Keras' mixed-precision guide); on a CPU, what BF16_MEASURED says for
    its kind, and float32 on a kind that was never measured.
    """
    if requested != "auto":
        return requested, ""
    if gpu_capabilities:
        if all(cc is not None and tuple(cc) >= (7, 0) for cc in gpu_capabilities):
            return "mixed_float16", "auto: GPU with tensor cores"
        return "float32", "auto: GPU older than compute capability 7.0"
    kind = cpu_kind(flags)
    precision, measured = BF16_MEASURED.get(kind, ("float32", "bf16 speed never measured on such a CPU, so float32 "
                                                   "(measure with scripts/bench_runtime.py)"))
    return precision, f"auto: {CPU_KINDS[kind]}; {measured}"


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _compute_capability(tf, gpu) -> tuple[int, int] | None:
    return tf.config.experimental.get_device_details(gpu).get("compute_capability")


def _set_threads(tf, runtime: RuntimeConfig) -> None:
    """Thread pools must be sized before TensorFlow runs its first op; unset means TensorFlow's default (all cores).

    inter-op 1 was the CPU default once (less peak memory); measured again it
    trained slower (docs/benchmarks.md, "Threads and XLA"), so every default
    is TensorFlow's.
    """
    try:
        if runtime.threads:
            tf.config.threading.set_intra_op_parallelism_threads(runtime.threads)
        if runtime.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(runtime.inter_op_threads)
    except RuntimeError:
        pass  # already initialised in this process (a second run in one Python session)


def _select_gpus(tf, device) -> list:
    """Make only the requested GPUs visible and return them."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        chosen = []
    elif device == "gpu" and not gpus:
        raise ImgclsError("device gpu (runtime.device or --device), but TensorFlow sees no GPU; install imgcls[gpu] "
                          "and a CUDA driver, or use device auto or cpu")
    elif isinstance(device, int):
        if device >= len(gpus):
            seen = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
            raise ImgclsError(f"device {device} (runtime.device or --device): GPU {device} requested, but TensorFlow sees "
                              f"{seen}; use auto, cpu" + (f" or an index below {len(gpus)}" if gpus else ""))
        chosen = [gpus[device]]
    else:
        chosen = gpus
    if chosen != tf.config.get_visible_devices("GPU"):
        tf.config.set_visible_devices(chosen, "GPU")
    return chosen
