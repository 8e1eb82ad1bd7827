"""Comparing runs: `imgcls runs`, run status, the history plot's panels, TensorBoard logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from imgcls import files
from imgcls.run import layout, status


def _copy(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)


# --------------------------------------------------------------------------- runs/latest


def test_commands_use_the_newest_run_when_there_are_several(cli, trained_run, tmp_path):
    """latest, not any run: two runs in one folder, the second made last, and every reader picks the second."""
    runs_dir = tmp_path / "runs"
    older = shutil.copytree(trained_run, runs_dir / "tiny-20260101-000000")
    newer = shutil.copytree(trained_run, runs_dir / "tiny-20260102-000000")
    layout.point_latest(runs_dir, newer)
    evaluated = json.loads(cli("evaluate", "--runs-dir", runs_dir, "--json").stdout)
    assert evaluated["run"] == newer.name and (newer / "eval.json").stat().st_mtime >= (older / "eval.json").stat().st_mtime
    plotted = cli("plot", "--runs-dir", runs_dir)
    assert plotted.stdout.strip() == str(newer.resolve() / "history.png")
    exported = cli("export", "--runs-dir", runs_dir, "--format", "keras")
    assert exported.exit_code == 0, exported.output
    assert (newer / "export" / "keras").is_dir() and not (older / "export").exists()
    layout.point_latest(runs_dir, older)
    assert json.loads(cli("evaluate", "--runs-dir", runs_dir, "--json").stdout)["run"] == older.name


# --------------------------------------------------------------------------- imgcls runs


def test_runs_lists_name_date_model_epochs_accuracy_wall_time_and_status(cli, trained_run):
    result = cli("runs", "--runs-dir", trained_run.parent)
    assert result.exit_code == 0, result.output
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for fragment in (trained_run.name, "simple_cnn", "2/2", f"{metrics['best']['val_accuracy']:.4f}", "finished", "status"):
        assert fragment in result.stdout, fragment


def test_runs_json_gives_every_column(cli, trained_run):
    [run] = json.loads(cli("runs", "--runs-dir", trained_run.parent, "--json").stdout)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert run["name"] == trained_run.name and run["model"] == "simple_cnn" and run["status"] == "finished"
    assert run["epochs_run"] == 2 and run["best_epoch"] == metrics["best_epoch"]
    assert run["best_val_accuracy"] == metrics["best"]["val_accuracy"] and run["wall_time_s"] == metrics["wall_time_s"]
    assert run["date"][:2] == "20" and len(run["date"]) == 16  # YYYY-mm-dd HH:MM


def test_runs_in_an_empty_folder_says_how_to_make_one(cli, tmp_path):
    result = cli("runs", "--runs-dir", tmp_path)
    assert result.exit_code == 0 and "no runs" in result.stderr


def test_a_run_without_metrics_is_running_while_its_trainer_holds_the_lock(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path)
    (run / "metrics.json").unlink()
    layout.record_process(run)  # this test process trains it: it holds the run's lock
    assert status.run_status(run) == "running"
    layout.release_run(run)  # as the kernel does when the trainer ends, however it ends
    assert status.run_status(run) == "failed"
    process = files.read_json(run / "process.json")
    files.write_json(run / "process.json", {**process, "pid": 1})  # a reused id: PID 1 always lives
    assert status.run_status(run) == "failed"
    files.write_json(run / "process.json", {**process, "host": "another-machine"})
    assert status.run_status(run) == "unknown"


def test_a_run_from_before_the_lock_is_running_while_its_process_id_lives(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path)
    (run / "metrics.json").unlink()
    (run / "process.lock").unlink(missing_ok=True)
    process = files.read_json(run / "process.json")
    files.write_json(run / "process.json", {**process, "pid": os.getpid()})
    assert status.run_status(run) == "running"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    files.write_json(run / "process.json", {**process, "pid": gone.pid})
    assert status.run_status(run) == "failed"


def test_a_run_without_metrics_still_reports_its_best_epoch_from_history(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path)
    expected = status.best_epoch(run)
    (run / "metrics.json").unlink()
    (run / "process.json").unlink()
    described = status.describe_run(run)
    assert described["status"] == "failed" and described["best_epoch"] == int(expected["epoch"])
    assert described["best_val_accuracy"] == pytest.approx(expected["val_accuracy"])
    assert described["epochs_run"] == 2 and described["wall_time_s"] > 0


def test_train_records_its_process_in_the_run(trained_run):
    process = files.read_json(trained_run / "process.json")
    assert process["pid"] == os.getpid() and process["host"]


# --------------------------------------------------------------------------- history plot


def test_history_plot_has_a_learning_rate_panel_and_marks_the_best_epoch(trained_run):
    from imgcls.plots import _pyplot, history_figure

    fig = history_figure([trained_run])
    try:
        accuracy, loss, learning_rate = fig.axes
        assert learning_rate.get_title() == "Learning rate"
        history = layout.read_history(trained_run)
        [lr_line] = [line for line in learning_rate.get_lines() if line.get_label() == "learning rate"]
        assert list(lr_line.get_ydata()) == [row["lr"] for row in history]
        best = status.best_epoch(trained_run)
        [star] = [line for line in accuracy.get_lines() if line.get_label().startswith("best epoch")]
        assert list(star.get_xdata()) == [best["epoch"]] and list(star.get_ydata()) == [best["val_accuracy"]]
    finally:
        _pyplot().close(fig)


def test_history_plot_of_several_runs_names_each_in_one_legend(trained_run, tmp_path):
    from imgcls.plots import _pyplot, history_figure

    other = shutil.copytree(trained_run, tmp_path / "other-run")
    fig = history_figure([trained_run, other])
    try:
        [legend] = fig.legends
        labels = [text.get_text() for text in legend.get_texts()]
        assert any(label.startswith(trained_run.name) for label in labels)
        assert any(label.startswith("other-run") for label in labels)
        assert "training" in labels and "validation" in labels
    finally:
        _pyplot().close(fig)


# --------------------------------------------------------------------------- TensorBoard


@pytest.mark.slow
def test_tensorboard_callback_writes_event_files_into_the_run(cli, tmp_path, tiny_config):
    result = cli("train", tiny_config, "--runs-dir", tmp_path, "--set", "train.epochs=1",
                 "--set", "callbacks.tensorboard=true", "--set", "evaluate.after_training=false")
    assert result.exit_code == 0, result.output
    logs = (tmp_path / "latest").resolve() / "tensorboard"
    for subset in ("train", "validation"):
        events = list((logs / subset).glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0, subset


def test_runs_and_plot_do_not_import_tensorflow(trained_run):
    code = ("import sys; from typer.testing import CliRunner; from imgcls.cli import app; r = CliRunner();"
            f"a = r.invoke(app, ['runs', '--runs-dir', {str(trained_run.parent)!r}]);"
            f"b = r.invoke(app, ['plot', {str(trained_run)!r}, '--out', {str(trained_run.parent / 'p.png')!r}]);"
            "print(a.exit_code, b.exit_code, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "0 0 False", result.stderr
