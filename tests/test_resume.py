"""Runs that survive: Ctrl-C and SIGTERM, resume, atomic checkpoints, full disks, identical reruns, safe loading."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml
from conftest import make_image_folder, read_only, training, write_config

from imgcls import files
from imgcls.run import layout, status

pytestmark = pytest.mark.slow  # every test here trains, or reads a run trained for this module

DETERMINISTIC = {"deterministic": True, "device": "cpu"}


def without_seconds(run):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in layout.read_history(run)]


@pytest.fixture(scope="module")
def interrupted_and_resumed(tmp_path_factory, tiny_data):
    """An uninterrupted 4-epoch run, and the same run stopped by Ctrl-C after epoch 2, copied, then resumed."""
    root = tmp_path_factory.mktemp("resume")
    config = write_config(root / "tiny.yaml", tiny_data, train={"epochs": 4}, runtime=DETERMINISTIC)
    whole, resumed = [], []
    assert training(config, runs_dir=root / "whole", final_weights=whole).exit_code == 0
    stopped = training(config, runs_dir=root / "runs", stop_after_epoch=2)
    run = (root / "runs" / "latest").resolve()
    copy = shutil.copytree(run, root / "copies" / run.name)
    pristine = shutil.copytree(run, root / "pristine" / run.name)  # interrupted; tests copy it, never change it
    again = training(resume=True, runs_dir=root / "runs", final_weights=resumed)
    return {"whole": (root / "whole" / "latest").resolve(), "run": run, "copy": copy, "pristine": pristine, "stopped": stopped,
            "again": again, "whole_weights": whole, "resumed_weights": resumed}


def test_ctrl_c_says_the_epoch_was_finished_and_shows_the_resume_command(interrupted_and_resumed):
    stopped, copy = interrupted_and_resumed["stopped"], interrupted_and_resumed["copy"]
    assert stopped.exit_code == 130
    assert "stopped after epoch 2, which is saved" in stopped.stderr
    assert "resume with: imgcls train --resume" in stopped.stderr and copy.name in stopped.stderr
    metrics = files.read_json(copy / "metrics.json")
    assert metrics["status"] == "interrupted" and metrics["stopped_by"] == "SIGINT" and metrics["epochs_run"] == 2
    assert (copy / "best.keras").is_file() and (copy / "history.png").is_file() and (copy / "backup" / "epoch-2").is_dir()


def test_a_resumed_run_ends_like_an_uninterrupted_one(interrupted_and_resumed):
    again, run, whole = interrupted_and_resumed["again"], interrupted_and_resumed["run"], interrupted_and_resumed["whole"]
    assert again.exit_code == 0, again.output
    assert "resuming after epoch 2 of 4 (optimizer step 8)" in again.stderr  # 27 training images, batches of 8
    metrics = files.read_json(run / "metrics.json")
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 4
    assert [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()] == ["epoch", "1", "2", "3", "4"]
    assert without_seconds(run) == without_seconds(whole)  # learning rates included: the schedule went on
    for a, b in zip(interrupted_and_resumed["resumed_weights"], interrupted_and_resumed["whole_weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (run / "backup").exists()  # finished: nothing left to resume
    assert len(layout.read_config(run)["imgcls"]["resumed"]) == 1


def test_resuming_a_finished_run_says_so_and_trains_nothing(cli, interrupted_and_resumed):
    run = interrupted_and_resumed["run"]
    before = (run / "history.csv").read_text()
    result = cli("train", "--resume", run)
    assert result.exit_code == 0 and "already finished; nothing to resume" in result.stderr
    assert (run / "history.csv").read_text() == before


def test_resuming_with_a_changed_config_is_refused_unless_forced(cli, interrupted_and_resumed):
    copy = interrupted_and_resumed["copy"]
    result = cli("train", "--resume", copy, "--set", "train.learning_rate=0.5", "--set", "model.dense=[8]")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "changes model.dense, train.learning_rate" in result.stderr and "--force" in result.stderr
    assert files.read_json(copy / "metrics.json")["status"] == "interrupted"  # untouched
    forced = cli("train", "--resume", copy, "--set", "train.learning_rate=0.0005", "--force")
    assert forced.exit_code == 0, forced.output
    assert layout.read_config(copy)["train"]["learning_rate"] == 0.0005 and files.read_json(copy / "metrics.json")["epochs_run"] == 4


def test_sigterm_mid_epoch_abandons_it_says_so_and_exits_143(tmp_path, tiny_config):
    result = training(tiny_config, "train.epochs=3", runs_dir=tmp_path, stop_after_epoch=1, how=signal.SIGTERM, mid_epoch=True)
    assert result.exit_code == 143
    run = (tmp_path / "latest").resolve()
    metrics = files.read_json(run / "metrics.json")
    assert metrics["status"] == "interrupted" and metrics["stopped_by"] == "SIGTERM" and metrics["epochs_run"] == 1
    assert "interrupted (SIGTERM): epoch 2 was abandoned (epoch 1 is saved)" in result.stderr
    assert "imgcls train --resume" in result.stderr and (run / "history.png").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after training


def test_early_stopping_patience_carries_over_a_resume(cli, tmp_path, tiny_config):
    """val_loss never improves by 1.0, so patience 2 stops after epoch 3, with or without an interruption after epoch 2."""
    never_better = "callbacks.early_stopping={enabled: true, patience: 2, monitor: val_loss, min_delta: 1.0}"
    assert training(tiny_config, "train.epochs=6", never_better, "evaluate.after_training=false", runs_dir=tmp_path,
                    stop_after_epoch=2).exit_code == 130
    result = cli("train", "--resume", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    metrics = files.read_json((tmp_path / "latest").resolve() / "metrics.json")
    assert metrics["status"] == "stopped_early" and metrics["epochs_run"] == 3  # not 5: the wait count was restored


def test_a_resumed_ema_run_ends_like_an_uninterrupted_one(tmp_path, tiny_data):
    """The backup is saved with the EMA weights swapped into the model; the next epoch must train the raw ones."""
    config = write_config(tmp_path / "ema.yaml", tiny_data, train={"epochs": 3, "ema": True}, runtime=DETERMINISTIC,
                          evaluate={"after_training": False})
    whole, resumed = [], []
    assert training(config, runs_dir=tmp_path / "whole", final_weights=whole).exit_code == 0
    assert training(config, runs_dir=tmp_path / "runs", stop_after_epoch=1).exit_code == 130
    assert training(resume=True, runs_dir=tmp_path / "runs", final_weights=resumed).exit_code == 0
    # Close, not bit-equal: once in a full-suite run (never alone) the last digits differed, cause not
    # yet found. Training from the EMA weights instead of the raw ones, the bug this guards, moves
    # the history and the weights far more than this tolerance.
    got, expected = (without_seconds((tmp_path / d / "latest").resolve()) for d in ("runs", "whole"))
    assert [row.keys() for row in got] == [row.keys() for row in expected]
    for row, expected_row in zip(got, expected, strict=True):
        assert row == pytest.approx(expected_row, rel=1e-5, abs=1e-7)
    for a, b in zip(resumed, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def two_phase_runs(tmp_path_factory, tiny_data, mobilenet_weights):
    """A transfer-learning run (epochs 1-2 head only, 3-4 fine-tuning) whole, and one stopped by Ctrl-C twice:
    after epoch 1 (phase 1), resumed, after epoch 3 (phase 2), resumed again to the end.

    best.keras follows val_loss, which changes a little every epoch here. Early stopping never sees an
    improvement of 1.0, so each phase's fit (Keras resets it in on_train_begin) ends restoring its first
    epoch's weights: resumed runs must carry its state, and drop it where a new phase starts.
    """
    root = tmp_path_factory.mktemp("two-phase")
    config = write_config(root / "pretrained.yaml", tiny_data, runtime=DETERMINISTIC, evaluate={"after_training": False},
                          train={"epochs": 2, "learning_rate": 0.05,
                                 "fine_tune": {"epochs": 2, "unfreeze": 20, "learning_rate": 0.005}},
                          callbacks={"checkpoint": {"monitor": "val_loss"},
                                     "early_stopping": {"enabled": True, "patience": 2, "monitor": "val_loss", "min_delta": 1.0}})
    raw = yaml.safe_load(config.read_text())
    raw["model"] = {"name": "backbone", "backbone": "mobilenet_v3_small", "weights": str(mobilenet_weights)}
    config.write_text(yaml.safe_dump(raw))

    def until(stop_after, *args, **kwargs):
        """Train (or resume) with a Ctrl-C after epoch `stop_after` (None: never); returns the result and final weights."""
        weights = []
        return training(*args, stop_after_epoch=stop_after, final_weights=weights, **kwargs), weights

    whole, whole_weights = until(None, config, runs_dir=root / "whole")
    stopped_in_phase_1, _ = until(1, config, runs_dir=root / "twice")
    stopped_in_phase_2, _ = until(3, resume=True, runs_dir=root / "twice")
    # Forced to unfreeze other layers than the backup's optimizer state belongs to: refused, backup kept.
    mismatch, _ = until(None, None, "train.fine_tune.unfreeze=10", resume=True, force=True, runs_dir=root / "twice")
    finished, weights = until(None, resume=True, runs_dir=root / "twice")
    return {"whole": {"run": (root / "whole" / "latest").resolve(), "result": whole, "weights": whole_weights},
            "twice": {"run": (root / "twice" / "latest").resolve(), "weights": weights},
            "stopped in phase 1": stopped_in_phase_1, "stopped in phase 2": stopped_in_phase_2,
            "mismatch": mismatch, "finished": finished}


def assert_same_run(resumed, whole):
    """History (learning rates included), best epoch, phases and final weights of `resumed` are those of `whole`."""
    run = resumed["run"]
    assert [int(row["epoch"]) for row in layout.read_history(run)] == [1, 2, 3, 4]
    assert without_seconds(run) == without_seconds(whole["run"])
    metrics, expected = files.read_json(run / "metrics.json"), files.read_json(whole["run"] / "metrics.json")
    assert metrics["status"] == "finished"
    assert {k: metrics[k] for k in ("epochs_run", "best_epoch", "best", "phases")} == {
        k: expected[k] for k in ("epochs_run", "best_epoch", "best", "phases")}
    assert resumed["weights"] and len(resumed["weights"]) == len(whole["weights"])
    for a, b in zip(resumed["weights"], whole["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    best, expected_best = (keras.saving.load_model(r / "best.keras").get_weights() for r in (run, whole["run"]))
    for a, b in zip(best, expected_best, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_two_phase_run_stopped_in_phase_1_resumes_there_then_fine_tunes(two_phase_runs):
    assert two_phase_runs["stopped in phase 1"].exit_code == 130
    again = two_phase_runs["stopped in phase 2"]  # the resume, itself stopped after epoch 3
    assert again.exit_code == 130, again.output
    assert "resuming after epoch 1 of 4" in again.stderr
    assert "phase 1 of 2: head only, backbone frozen, epochs 2-2" in again.stderr
    assert "phase 2 of 2: fine-tuning, top 20 backbone layers unfrozen at learning rate 0.005, epochs 3-4" in again.stderr


def test_a_two_phase_run_stopped_in_phase_2_resumes_fine_tuning_at_its_optimizer_step(two_phase_runs):
    again = two_phase_runs["finished"]
    assert again.exit_code == 0, again.output
    # 4 steps: the fine-tuning optimizer's own count (one epoch of 27 images in batches of 8), not phase 1's.
    assert "resuming after epoch 3 of 4 (optimizer step 4)" in again.stderr
    assert "phase 1 of 2" not in again.stderr and "phase 2 of 2: fine-tuning" in again.stderr


def test_a_two_phase_run_stopped_in_each_phase_and_resumed_ends_as_the_uninterrupted_one(two_phase_runs):
    assert two_phase_runs["whole"]["result"].exit_code == 0
    assert_same_run(two_phase_runs["twice"], two_phase_runs["whole"])


def test_a_resume_forced_to_unfreeze_other_layers_is_refused_not_trained_on_wrong_optimizer_state(two_phase_runs):
    refused = two_phase_runs["mismatch"]
    assert refused.exit_code == 2
    assert "the backup trained" in refused.stderr and "resume with the run's own config" in refused.stderr
    assert "Traceback" not in refused.output


# --------------------------------------------------------------------------- artifacts never half-written


def test_a_checkpoint_save_that_dies_midway_keeps_the_previous_best_keras(cli, tmp_path, tiny_config, monkeypatch):
    saves = []
    real_save = keras.Model.save

    def dying_save(model, filepath, *args, **kwargs):
        saves.append(filepath)
        if len(saves) == 1:
            return real_save(model, filepath, *args, **kwargs)
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")  # what a crash mid-write leaves behind
        raise OSError(28, "No space left on device", str(filepath))

    monkeypatch.setattr(keras.Model, "save", dying_save)
    # Save every epoch, so the second epoch's save is the one that dies.
    monkeypatch.setattr(keras.callbacks.ModelCheckpoint, "_should_save_model", lambda *a: True)
    result = cli("train", tiny_config, "--runs-dir", tmp_path, "--set", "train.epochs=3")
    assert result.exit_code == 2 and "No space left on device" in result.stderr and "imgcls train --resume" in result.stderr
    run = (tmp_path / "latest").resolve()
    model = keras.saving.load_model(run / "best.keras")  # the first epoch's model, whole
    assert model.output_shape == (None, 3)
    assert not [p for p in run.iterdir() if p.name.startswith(".best")]  # no temporary file left
    assert files.read_json(run / "metrics.json")["status"] == "failed"


def test_a_full_runs_folder_is_refused_before_training(cli, tmp_path, tiny_config, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(layout.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    result = cli("train", tiny_config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "MiB free, but the checkpoints need about" in result.stderr
    assert not any((tmp_path / "runs").iterdir())  # no run folder, latest untouched


def test_a_read_only_runs_folder_is_refused_before_training(cli, tmp_path, tiny_config):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with read_only(runs_dir):
        result = cli("train", tiny_config, "--runs-dir", runs_dir)
    assert result.exit_code == 2 and "cannot write here" in result.stderr and "--runs-dir" in result.stderr
    assert "Traceback" not in result.output and not any(runs_dir.iterdir())


# --------------------------------------------------------------------------- what resume refuses


def test_resume_is_refused_while_the_runs_trainer_lives(cli, interrupted_and_resumed, tmp_path):
    run = shutil.copytree(interrupted_and_resumed["pristine"], tmp_path / "alive")
    (run / "metrics.json").unlink()  # as while training: metrics.json comes at the end
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
                               str(run / "process.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # another process trains it
        result = cli("train", "--resume", run)
        assert result.exit_code == 2 and "still training (process" in result.stderr and "stop it first" in result.stderr
        forced = cli("train", "--resume", run, "--force")
        assert forced.exit_code == 2 and "another process is training this run" in forced.stderr
    finally:
        holder.kill()
        holder.wait()
    assert not (run / "metrics.json").exists() and (run / "backup").is_dir()
    assert cli("train", "--resume", run).exit_code == 0  # its trainer is gone: the lock went with it


def test_resume_is_refused_when_the_data_no_longer_splits_as_split_csv_says(cli, interrupted_and_resumed, tmp_path):
    data = shutil.copytree(layout.subset_root(interrupted_and_resumed["pristine"], "train"), tmp_path / "data")
    run = shutil.copytree(interrupted_and_resumed["pristine"], tmp_path / "run")
    config = layout.read_config(run)
    config["data"]["dir"] = config["imgcls"]["data_dir"] = str(data)
    files.write_yaml(run / "config.yaml", config)
    make_image_folder(data, classes={"red": (200, 40, 40)}, per_class=14, seed=7)  # two more red images
    result = cli("train", "--resume", run)
    assert result.exit_code == 2 and "the data changed since the run started" in result.stderr
    assert "--force" in result.stderr and files.read_json(run / "metrics.json")["status"] == "interrupted"


def test_a_run_killed_with_sigkill_resumes_and_finishes(cli, tmp_path, tiny_data):
    """kill -9 leaves no metrics.json and no message; the backup of the last finished epoch is enough."""
    config = write_config(tmp_path / "c.yaml", tiny_data, data={"batch_size": 1}, train={"epochs": 12},
                          evaluate={"after_training": False})
    runs_dir = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "imgcls", "train", str(config), "--runs-dir", str(runs_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(runs_dir.glob("*/backup/epoch-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    run = (runs_dir / "latest").resolve()
    assert process.returncode == -signal.SIGKILL and not (run / "metrics.json").exists()
    assert status.run_status(run) == "failed"  # its process is gone without a word
    resumed = cli("train", "--resume", "--runs-dir", runs_dir)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after epoch" in resumed.stderr
    metrics = files.read_json(run / "metrics.json")
    assert metrics["status"] == "finished" and [int(r["epoch"]) for r in layout.read_history(run)] == list(range(1, 13))


# --------------------------------------------------------------------------- reproducibility


def test_two_deterministic_cpu_runs_give_identical_histories(cli, tmp_path, tiny_data):
    config = write_config(tmp_path / "c.yaml", tiny_data, runtime=DETERMINISTIC, evaluate={"after_training": False})
    histories = []
    for name in ("first", "second"):
        assert cli("train", config, "--runs-dir", tmp_path, "--name", name).exit_code == 0
        histories.append(without_seconds((tmp_path / "latest").resolve()))  # seconds is wall time
    assert histories[0] == histories[1] and len(histories[0]) == 2


def test_the_run_records_package_versions(trained_run):
    recorded = layout.read_config(trained_run)["imgcls"]
    assert set(recorded["packages"]) >= {"tensorflow", "keras", "numpy", "pillow", "pydantic"}
    assert recorded["data_git"] is None  # the test images are not in a git repository


def test_the_data_folders_git_commit_is_recorded_when_there_is_one(tmp_path):
    import subprocess

    make = {"cwd": tmp_path, "check": True, "capture_output": True}
    (tmp_path / "a.txt").write_text("x")
    subprocess.run(["git", "init", "-q"], **make)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data", "--allow-empty"], **make)
    from imgcls.run.provenance import data_git_commit

    recorded = data_git_commit(tmp_path)
    assert len(recorded["commit"]) == 40 and recorded["dirty"] is True  # a.txt is not committed


# --------------------------------------------------------------------------- safe loading


def test_a_keras_file_with_a_lambda_layer_is_refused(cli, tmp_path, trained_run, tiny_data):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    keras.Model(inputs, outputs).save(tmp_path / "evil.keras")
    (tmp_path / "labels.txt").write_text("blue\ngreen\nred\n")
    result = cli("predict", tiny_data / "red" / "000.png", "--model", tmp_path / "evil.keras")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "evil.keras" in result.stderr and "Lambda" in result.stderr and "safe mode" in result.stderr


# --------------------------------------------------------------------------- several devices and machines


def free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# A worker: `imgcls train` as a function, with a callback (the public hook) that keeps what it trained.
WORKER = """
import json, sys
import keras, numpy as np
from imgcls.launch import launch_training

class Keep(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        np.savez(sys.argv[3], *[np.asarray(w) for w in self.model.trainable_weights])
        json.dump({"steps": int(self.model.optimizer.iterations.numpy())}, open(sys.argv[3] + ".json", "w"))

launch_training(sys.argv[1], runs_dir=sys.argv[2], callbacks=[Keep()])
"""


def test_two_workers_train_one_run_together_and_only_the_chief_writes_it(tmp_path, tiny_data):
    config = write_config(tmp_path / "c.yaml", tiny_data, train={"epochs": 2}, runtime={"distribute": "multi_worker"},
                          evaluate={"after_training": False})
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "CUDA_VISIBLE_DEVICES": ""}
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER, str(config), str(tmp_path / "runs"),
                                         str(tmp_path / f"worker{index}.npz")],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for worker in workers:
        try:
            _, stderr = worker.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            pytest.fail("multi-worker training did not finish in 240 s")
        outputs.append(stderr)
        assert worker.returncode == 0, stderr
    assert "this is worker 0 (chief: writes the run folder)" in outputs[0]
    assert "this is worker 1" in outputs[1] and "worker 1: finished after 2 epochs" in outputs[1]
    assert all("global batch 16 = 8 per replica x 2 replicas" in out for out in outputs)
    # Trained together: the same trainable weights on both, after ceil(27 images / global batch 16) = 2 steps an
    # epoch. (BatchNorm's moving statistics are not trainable: each worker keeps its own, from its own batches.)
    with np.load(tmp_path / "worker0.npz") as chief, np.load(tmp_path / "worker1.npz") as other:
        for name in chief.files:
            np.testing.assert_allclose(chief[name], other[name], rtol=1e-6, atol=1e-7)
    for index in range(2):
        assert json.loads((tmp_path / f"worker{index}.npz.json").read_text())["steps"] == 2 * 2
    [run] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.is_symlink()]
    assert files.read_json(run / "metrics.json")["status"] == "finished"
    assert layout.read_config(run)["imgcls"]["distribute"] == {"strategy": "multi_worker", "replicas": 2, "global_batch_size": 16}
    assert len(layout.read_history(run)) == 2


def test_global_batch_and_linear_learning_rate_scaling_follow_the_replicas():
    from imgcls.config import load_config
    from imgcls.training.optim import resolve_schedule

    config = load_config(raw={"data": {"dir": "d"}, "train": {"learning_rate": 0.01, "scale_learning_rate": "linear"}})
    assert resolve_schedule(config.train, 10, replicas=4)["learning_rate"] == pytest.approx(0.04)
    assert resolve_schedule(config.train, 10, replicas=1)["learning_rate"] == pytest.approx(0.01)
    unscaled = load_config(raw={"data": {"dir": "d"}, "train": {"learning_rate": 0.01}})
    assert resolve_schedule(unscaled.train, 10, replicas=4)["learning_rate"] == pytest.approx(0.01)


def test_multi_worker_needs_tf_config_and_worker_0_is_the_chief(monkeypatch):
    from imgcls.errors import ImgclsError
    from imgcls.runtime import choose_strategy, is_chief

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ImgclsError, match="multi_worker needs TF_CONFIG"):
        choose_strategy(None, "multi_worker", [])
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ImgclsError, match="TF_CONFIG is not valid JSON"):
        choose_strategy(None, "multi_worker", [])
    assert choose_strategy(None, "auto", ["one GPU"])[:2] == (None, "none")
    workers = {"cluster": {"worker": ["a:1", "b:1"]}}
    assert is_chief(("worker", 0), workers) and not is_chief(("worker", 1), workers)
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}}
    assert is_chief(("chief", 0), with_chief) and not is_chief(("worker", 0), with_chief)


def test_resume_finds_the_data_folder_from_another_working_folder(trained_run, tmp_path):
    import yaml

    from imgcls.run.resume import prepare_resume

    run = shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    (run / "metrics.json").unlink()
    (run / "process.json").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["dir"] = "data/colours"  # relative to a folder we are not in
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    prepared = prepare_resume(run, tmp_path / "runs", [], force=False)
    assert str(prepared.config.data.dir) == config["imgcls"]["data_dir"] and not prepared.done
