"""Runtime set-up: precision policy, device choice, and the run folder's `latest` pointer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import keras
import pytest

from imgcls.run import layout
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


AMX = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}  # Intel Sapphire Rapids and later
AVX512_BF16 = {"avx2", "avx512f", "avx512_bf16"}  # AMD Zen 4/5: native bf16 dot products, no AMX
AVX512 = {"avx2", "avx512f"}  # Skylake-SP to Ice Lake: no bf16 instructions
AVX2 = {"avx", "avx2", "fma"}


@pytest.mark.parametrize("flags, expected, reason", [
    (AVX512_BF16, "mixed_bfloat16", "measured faster"),
    (AVX2, "float32", "measured several times slower"),
    (AMX, "float32", "never measured"),  # until someone measures it: scripts/bench_runtime.py
    (AVX512, "float32", "never measured"),
    (set(), "float32", "no x86 CPU flags"),  # macOS, Windows, ARM
], ids=["avx512_bf16", "avx2", "amx", "avx512", "no-flags"])
def test_auto_precision_on_a_cpu_is_what_was_measured_on_its_kind(flags, expected, reason):
    from imgcls.runtime import choose_precision

    precision, why = choose_precision("auto", [], flags)
    assert precision == expected and why.startswith("auto") and reason in why


@pytest.mark.parametrize("capabilities, expected", [
    ([(6, 1)], "float32"),                   # Pascal: no tensor cores
    ([(7, 0)], "mixed_float16"),             # Volta
    ([(8, 0)], "mixed_float16"),             # Ampere
    ([(9, 0)], "mixed_float16"),             # Hopper
    ([(8, 6), (6, 1)], "float32"),           # one GPU without tensor cores holds the others back
    ([None], "float32"),                     # capability unknown
], ids=["6.1", "7.0", "8.0", "9.0", "8.6+6.1", "unknown"])
def test_auto_precision_on_gpus_follows_their_compute_capability(capabilities, expected):
    from imgcls.runtime import choose_precision

    precision, why = choose_precision("auto", capabilities, AVX512_BF16)  # the GPU decides, not the CPU
    assert precision == expected and why.startswith("auto: GPU")


def test_an_explicit_precision_is_used_as_given():
    from imgcls.runtime import choose_precision

    assert choose_precision("mixed_bfloat16", [], set()) == ("mixed_bfloat16", "")
    assert choose_precision("float32", [(8, 0)], AVX512_BF16) == ("float32", "")


@pytest.mark.parametrize("flags, expected", [(AVX512_BF16, "mixed_bfloat16"), (AVX2, "float32")], ids=["avx512_bf16", "avx2"])
def test_setup_runtime_applies_and_explains_auto_for_the_cpu_it_is_given(monkeypatch, flags, expected):
    from imgcls import runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    info = setup_runtime(RuntimeConfig(device="cpu"))
    assert info.precision == expected and keras.mixed_precision.global_policy().name == expected
    assert info.jit_compile is False  # XLA stays off on CPUs
    assert f"device CPU, precision {expected} (auto: CPU has" in str(info)


def test_cpu_device_runs_on_the_cpu():
    assert setup_runtime(RuntimeConfig(device="cpu")).device == "CPU"


def test_asking_for_a_gpu_that_is_not_there_is_a_clear_error():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(ImgclsError, match=r"device gpu \(runtime.device or --device\), but TensorFlow sees no GPU"):
        setup_runtime(RuntimeConfig(device="gpu"))
    with pytest.raises(ImgclsError, match="GPU 3 requested, but TensorFlow sees no GPU"):
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
    run = layout.create_run(tmp_path, "demo")
    (run / layout.CONFIG).write_text("data: {dir: x}\n")
    latest = tmp_path / layout.LATEST
    assert latest.is_file() and not latest.is_symlink()
    assert layout.resolve_run(None, tmp_path) == run.resolve()


def test_each_run_gets_its_own_folder_even_within_the_same_second(tmp_path):
    first, second = layout.create_run(tmp_path, "demo"), layout.create_run(tmp_path, "demo")
    assert first != second
    assert (tmp_path / layout.LATEST).resolve() == second.resolve()


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
