"""Every command is a good GPU citizen: memory growth and the device choice come before TensorFlow sets up its devices.

Each command runs in a fresh process (tests/fake_gpu.py) that tells TensorFlow
it has one GPU and records what imgcls asks of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_user_error, write_config

pytestmark = pytest.mark.slow  # every test here trains, or reads a run trained for this module

FAKE_GPU = str(Path(__file__).with_name("fake_gpu.py"))
GPU = "/physical_device:GPU:0"


@pytest.fixture(scope="module")
def commands(trained_run, tiny_data, tmp_path_factory) -> dict:
    """Every command that touches TensorFlow, each run once under the fake GPU: {name: (exit code, events, stderr)}."""
    root = tmp_path_factory.mktemp("fake-gpu")
    run = shutil.copytree(trained_run, root / "run")  # evaluate and export write into it
    image = tiny_data / "red" / "000.png"
    config = write_config(root / "tiny.yaml", tiny_data, train={"epochs": 1}, runtime={"precision": "auto"})
    argv = {
        "train": ["train", config, "--runs-dir", root / "runs"],
        "train on the cpu": ["train", config, "--runs-dir", root / "runs-cpu", "--set", "runtime.device=cpu",
                             "--set", "runtime.precision=float32"],
        "summary": ["summary", config],
        "predict": ["predict", image, "--run", run],
        "predict --device cpu": ["predict", image, "--run", run, "--device", "cpu"],
        "evaluate": ["evaluate", run],
        "export": ["export", run, "--format", "keras", "--out", root / "export"],
        "inspect": ["inspect", tiny_data, "--out", root / "grid.png"],
    }
    processes = {}
    for name, args in argv.items():
        events = root / f"{name.replace(' ', '_')}.json"
        command = [sys.executable, FAKE_GPU, str(events), *map(str, args)]
        processes[name] = (subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), events)
    results = {}
    for name, (process, events) in processes.items():
        _, stderr = process.communicate(timeout=600)
        results[name] = (process.returncode, json.loads(events.read_text()) if events.is_file() else None, stderr)
    return results


def before_devices_initialised(events: list) -> list:
    initialised = events.index(["devices initialised"])  # every command runs TensorFlow: it must get there
    return events[:initialised]


@pytest.mark.parametrize("name", ["train", "summary", "predict", "evaluate", "export", "inspect"])
def test_every_command_turns_on_gpu_memory_growth_before_tensorflow_sets_up_its_devices(commands, name):
    code, events, stderr = commands[name]
    assert code == 0, stderr
    assert ["set_memory_growth", GPU, True] in before_devices_initialised(events), events


@pytest.mark.parametrize("name", ["train on the cpu", "predict --device cpu"])
def test_the_cpu_choice_hides_the_gpus_before_tensorflow_sets_up_its_devices(commands, name):
    code, events, stderr = commands[name]
    assert code == 0, stderr
    assert before_devices_initialised(events) == [["set_visible_devices", [], "GPU"]]
    assert not [e for e in events if e[0] == "set_memory_growth"]


def test_auto_on_a_tensor_core_gpu_trains_in_mixed_float16_with_xla(commands):
    code, _, stderr = commands["train"]
    assert code == 0, stderr
    assert "device GPU:0, precision mixed_float16 (auto: GPU with tensor cores), XLA" in stderr


def test_a_device_that_is_not_a_device_is_a_clear_error(cli, trained_run, tiny_data):
    assert_user_error(cli("predict", tiny_data / "red" / "000.png", "--run", trained_run, "--device", "tpu"),
                      "--device tpu: use auto | cpu | gpu | a GPU index")


def test_asking_for_a_gpu_on_a_machine_without_one_says_what_to_install(cli, trained_run, tiny_data):
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert_user_error(cli("predict", tiny_data / "red" / "000.png", "--run", trained_run, "--device", "gpu"),
                      "device gpu (runtime.device or --device), but TensorFlow sees no GPU; install imgcls[gpu]")


def test_only_the_runtime_imports_tensorflow():
    """runtime.import_tensorflow sets the GPUs up; a plain `import tensorflow` elsewhere could reach TensorFlow first."""
    offenders = []
    for path in (Path(__file__).parents[1] / "src" / "imgcls").rglob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for before, line in zip(["", *lines], lines):
            typing_only = before.strip() == "if TYPE_CHECKING:"
            if line.strip().startswith(("import tensorflow", "from tensorflow")) and not typing_only and path.name != "runtime.py":
                offenders.append(f"{path.name}: {line.strip()}")
    assert offenders == []


def test_changing_the_device_once_tensorflow_has_set_up_its_devices_is_a_clear_error(monkeypatch):
    from types import SimpleNamespace

    from imgcls import runtime
    from imgcls.errors import ImgclsError

    gpu = SimpleNamespace(name=GPU)

    def refuse(devices, device_type=None):
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    tf = SimpleNamespace(config=SimpleNamespace(  # a process whose TensorFlow already runs on its GPU
        list_physical_devices=lambda kind: [gpu], get_visible_devices=lambda kind: [gpu], set_visible_devices=refuse,
        experimental=SimpleNamespace(get_memory_growth=lambda device: True)))
    monkeypatch.setattr(runtime, "_devices", runtime._Devices(device="auto", gpus=[gpu]))
    with pytest.raises(ImgclsError, match="device cpu: TensorFlow has set up its devices for auto in this process already"):
        runtime._set_up_devices(tf, "cpu")
