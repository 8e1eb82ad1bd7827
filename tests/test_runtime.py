"""Runtime set-up: precision policy, device choice, and the run folder's `latest` pointer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import keras
import pytest

from imgcls import runs
from imgcls.config import RuntimeConfig
from imgcls.errors import ImgclsError
from imgcls.runtime import setup_runtime


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_precision_sets_the_global_keras_policy(precision):
    info = setup_runtime(RuntimeConfig(precision=precision))
    assert keras.mixed_precision.global_policy().name == precision
    assert info.precision == precision


@pytest.mark.parametrize("gpus, flags, expected", [
    ([(8, 0)], set(), "mixed_float16"),              # tensor cores
    ([(8, 6), (6, 1)], set(), "float32"),            # one GPU without tensor cores
    ([], {"avx2", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),
    ([], {"avx2", "avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ([], {"avx", "avx2", "fma"}, "float32"),         # bf16 would be emulated: slower
])
def test_auto_precision_follows_the_hardware(gpus, flags, expected):
    from imgcls.runtime import choose_precision

    precision, why = choose_precision("auto", gpus, flags)
    assert precision == expected and why.startswith("auto")


def test_an_explicit_precision_is_used_as_given():
    from imgcls.runtime import choose_precision

    assert choose_precision("mixed_bfloat16", [], set()) == ("mixed_bfloat16", "")


def test_auto_settings_on_this_cpu_are_printed_with_the_reason():
    from imgcls.runtime import choose_precision, cpu_flags

    info = setup_runtime(RuntimeConfig(device="cpu"))
    assert info.precision == choose_precision("auto", [], cpu_flags())[0]
    assert info.jit_compile is False  # XLA stays off on CPUs
    assert "auto:" in str(info)


def test_cpu_device_runs_on_the_cpu():
    assert setup_runtime(RuntimeConfig(device="cpu")).device == "CPU"


def test_asking_for_a_gpu_that_is_not_there_is_a_clear_error():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(ImgclsError, match="runtime.device: gpu, but TensorFlow sees no GPU"):
        setup_runtime(RuntimeConfig(device="gpu"))
    with pytest.raises(ImgclsError, match="runtime.device: GPU 3 requested"):
        setup_runtime(RuntimeConfig(device=3))


def test_seed_makes_weight_initialisation_repeatable():
    setup_runtime(RuntimeConfig(seed=7))
    a = keras.random.normal((3,)).numpy()
    setup_runtime(RuntimeConfig(seed=7))
    b = keras.random.normal((3,)).numpy()
    assert (a == b).all()


def test_latest_falls_back_to_a_pointer_file_where_symlinks_are_impossible(tmp_path, monkeypatch):
    def no_symlinks(self, *args, **kwargs):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(Path, "symlink_to", no_symlinks)
    run = runs.create_run(tmp_path, "demo")
    (run / runs.CONFIG).write_text("data: {dir: x}\n")
    latest = tmp_path / runs.LATEST
    assert latest.is_file() and not latest.is_symlink()
    assert runs.resolve_run(None, tmp_path) == run.resolve()


def test_each_run_gets_its_own_folder_even_within_the_same_second(tmp_path):
    first, second = runs.create_run(tmp_path, "demo"), runs.create_run(tmp_path, "demo")
    assert first != second
    assert (tmp_path / runs.LATEST).resolve() == second.resolve()


def test_thread_pools_keep_tensorflows_defaults_unless_configured():
    from imgcls.runtime import _set_threads

    calls = {}
    threading = SimpleNamespace(set_intra_op_parallelism_threads=lambda n: calls.update(intra=n),
                                set_inter_op_parallelism_threads=lambda n: calls.update(inter=n))
    tf = SimpleNamespace(config=SimpleNamespace(threading=threading))  # records what would be set
    _set_threads(tf, RuntimeConfig())
    assert calls == {}  # measured: inter-op 1 on the CPU trained 7% slower
    _set_threads(tf, RuntimeConfig(threads=2, inter_op_threads=4))
    assert calls == {"intra": 2, "inter": 4}
