"""train.time_limit_minutes: the schedule is laid over the epochs that fit the budget, measured as the run goes."""

from __future__ import annotations

import json

import pytest
from conftest import write_config

from imgcls import files
from imgcls.run.layout import read_history
from imgcls.training.phases import Phase


def _cosine(total_steps: int, warmup_steps: int = 10, peak: float = 1e-3):
    import keras

    return keras.optimizers.schedules.CosineDecay(0.0, total_steps - warmup_steps, warmup_target=peak,
                                                  warmup_steps=warmup_steps)


def test_a_fitted_schedule_is_the_cosine_built_for_the_planned_length():
    from imgcls.training.budget import FittedSchedule

    fitted = FittedSchedule(_cosine(1000), warmup_steps=10, total_steps=1000)
    fitted.fit_to(200)
    built_for_200 = _cosine(200)
    for step in (0, 5, 10, 60, 120, 199, 200, 260):
        assert float(fitted(step)) == pytest.approx(float(built_for_200(step)), rel=1e-4, abs=1e-9), step
    fitted.fit_to(1000)  # the plan may move back: the curve follows
    assert float(fitted(500)) == pytest.approx(float(_cosine(1000)(500)), rel=1e-4)
    import keras

    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fitted))  # an optimizer saved whole
    assert float(again(500)) == pytest.approx(float(fitted(500)))


def test_planned_epochs_follow_the_measured_pace():
    from imgcls.training.budget import plan_epochs

    assert plan_epochs(done=1, cap=1000, seconds_left=100, epoch_seconds=[10.0]) == 11
    # The first epoch traces the model and fills the cache: once there are others, the steady pace counts.
    assert plan_epochs(done=4, cap=1000, seconds_left=50, epoch_seconds=[20.0, 5.0, 5.0, 5.0]) == 14
    assert plan_epochs(done=4, cap=6, seconds_left=50, epoch_seconds=[20.0, 5.0, 5.0, 5.0]) == 6  # train.epochs caps it
    assert plan_epochs(done=4, cap=1000, seconds_left=3, epoch_seconds=[20.0, 5.0, 5.0, 5.0]) == 4  # nothing more fits
    # The pace changed (another job took a core): the plan follows the recent epochs.
    assert plan_epochs(done=9, cap=1000, seconds_left=100, epoch_seconds=[9.0] + [5.0] * 3 + [10.0] * 5) == 19


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeModel:
    def __init__(self, schedule):
        self.stop_training = False
        self.optimizer = type("Optimizer", (), {"_learning_rate": schedule})()


def _budgeted(minutes, phases, steps_per_epoch=10, lines=None):
    """A TimeBudget on a fake clock, its model's schedule a cosine laid over the first phase's cap."""
    from imgcls.training.budget import FittedSchedule, TimeBudget

    clock = FakeClock()
    budget = TimeBudget(minutes, phases, steps_per_epoch, log=(lines if lines is not None else []).append, clock=clock)
    cap_steps = (phases[0].last_epoch - phases[0].first_epoch) * steps_per_epoch
    budget.set_model(FakeModel(FittedSchedule(_cosine(cap_steps), 10, cap_steps)))
    return budget, clock


def _run_epochs(budget, clock, first_epoch, seconds_each):
    """Epochs as Keras calls them, each taking its seconds, until the budget stops the fit; the epochs run."""
    budget.model.stop_training = False
    budget.on_train_begin()
    epoch = first_epoch
    for seconds in seconds_each:
        budget.on_epoch_begin(epoch)
        budget.on_train_batch_begin(0)
        clock.now += seconds
        budget.on_train_batch_end(0)
        budget.on_epoch_end(epoch)
        epoch += 1
        if budget.model.stop_training:
            break
    budget.on_train_end()
    return epoch


def test_a_budget_plans_its_epochs_and_ends_the_run_annealed_within_it():
    lines = []
    budget, clock = _budgeted(1, [Phase("all layers", None, 0, 1000, "all")], lines=lines)
    ended = _run_epochs(budget, clock, 0, [12.0] + [4.0] * 100)  # the first epoch also traces: slower
    assert budget.estimated == 5  # after epoch 1: 48 s left at 12 s an epoch
    assert ended == budget.planned == 13 and clock.now <= 60  # 12 + 12 x 4 = 60 s: the last epoch fits exactly
    assert budget.spent
    schedule = budget.model.optimizer._learning_rate
    assert float(schedule(ended * 10)) < 0.05 * 1e-3  # annealed: under 5% of the peak at the last step
    assert "time budget: the schedule now ends at epoch 5, what fits the 48 s left of the 1 min budget at 12.0 s an epoch" in lines[0]
    assert "train.epochs 1000 is only the cap" in lines[0] and "re-planned to end at epoch 13" in lines[-1]


def test_a_budget_says_when_the_schedule_keeps_its_own_periods():
    """An exponential decay is a rate, not a run length: the budget still ends training, but says the rate is not moved."""
    import keras

    from imgcls.training.budget import TimeBudget

    clock, lines = FakeClock(), []
    budget = TimeBudget(1, [Phase("all layers", None, 0, 1000, "all")], 10, log=lines.append, clock=clock)
    budget.set_model(FakeModel(keras.optimizers.schedules.ExponentialDecay(1e-3, 60, 0.96)))
    assert _run_epochs(budget, clock, 0, [10.0] * 100) == 6 and budget.spent
    assert "training ends at epoch 6" in lines[0] and "the learning-rate schedule keeps its own periods" in lines[0]


def test_a_budget_longer_than_the_epochs_changes_nothing():
    lines = []
    budget, clock = _budgeted(10, [Phase("all layers", None, 0, 8, "all")], lines=lines)
    assert _run_epochs(budget, clock, 0, [4.0] * 8) == 8 and not budget.spent
    assert lines == ["time budget: all 8 epochs of train.epochs fit the 10 min budget at 4.0 s an epoch; the schedule keeps its length"]
    assert float(budget.model.optimizer._learning_rate(40)) == pytest.approx(float(_cosine(80)(40)))


def test_a_two_phase_run_splits_the_budget_and_the_second_starts_after_the_first():
    phases = [Phase("head only, backbone frozen", None, 0, 10, "none"), Phase("fine-tuning", None, 10, 20, "all")]
    budget, clock = _budgeted(1, phases)
    assert _run_epochs(budget, clock, 0, [4.0] * 10) == 7  # its share, 30 s: 7 epochs of 4 s, an 8th would end at 32
    assert (phases[0].first_epoch, phases[0].last_epoch) == (0, 7)
    assert (phases[1].first_epoch, phases[1].last_epoch) == (7, 17) and not budget.spent
    budget.begin_phase(1)
    assert _run_epochs(budget, clock, 7, [6.0] * 10) == 12  # the rest, 32 s: 5 epochs of 6 s (the backbone trains too)
    assert budget.spent and budget.phase_ends == [7, 12] and clock.now <= 60


def test_a_budget_shorter_than_one_epoch_cuts_it_and_says_so():
    budget, clock = _budgeted(0.1, [Phase("all layers", None, 0, 1000, "all")])
    assert _run_epochs(budget, clock, 0, [30.0]) == 1 and budget.spent and budget.cut


def test_a_resumed_run_keeps_its_plan_through_its_first_slow_epoch():
    """The first epoch of a session traces the model again: a resumed run must not re-plan from it."""
    lines = []
    budget, clock = _budgeted(1, [Phase("all layers", None, 0, 1000, "all")], lines=lines)
    budget.planned, budget.seconds_spent = 12, 20.0  # as EpochBackup restores them after epoch 5 at 4 s an epoch
    clock.now = 100.0  # another process, another clock
    _run_epochs(budget, clock, 5, [12.0])
    assert budget.planned == 12 and "keeping the run's plan, the schedule ends at epoch 12; 40 s" in lines[0]
    assert float(budget.model.optimizer._learning_rate(60)) == pytest.approx(float(_cosine(120)(60)), rel=1e-4)


def test_phases_are_laid_out_again_from_a_backups_plan():
    from imgcls.training.budget import relay_phases

    phases = [Phase("head", None, 0, 1000, "none"), Phase("fine-tuning", None, 1000, 1010, "all")]
    relay_phases(phases, [7])
    assert [(p.first_epoch, p.last_epoch) for p in phases] == [(0, 7), (7, 17)]
    phases = [Phase("head", None, 0, 1000, "none"), Phase("fine-tuning", None, 1000, 1010, "all")]
    relay_phases(phases, [7, 12])
    assert [(p.first_epoch, p.last_epoch) for p in phases] == [(0, 7), (7, 12)]


# ---- whole runs: a fake clock makes every epoch take 10 s, whatever this machine's speed

@pytest.fixture
def ten_seconds_an_epoch(monkeypatch):
    import keras

    clock = FakeClock()
    monkeypatch.setattr("imgcls.training.budget._now", clock)

    class TenSecondEpochs(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == self.params["steps"] - 1:
                clock.now += 10.0

    return TenSecondEpochs


class InterruptAfter:
    """A Keras callback that presses Ctrl-C once epoch `epoch` is saved."""

    def __new__(cls, epoch):
        import keras

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, index, logs=None):
                if index + 1 == epoch:
                    raise KeyboardInterrupt

        return Interrupt()


def _budget_config(tmp_path, tiny_data):
    return write_config(tmp_path / "c.yaml", tiny_data, data={"batch_size": 9},
                        train={"epochs": 1000, "time_limit_minutes": 1, "learning_rate": 1e-3,
                               "schedule": {"name": "cosine_decay", "warmup_epochs": 1}})


@pytest.mark.slow
def test_a_budgeted_run_records_its_plan_and_a_resumed_one_keeps_it(tmp_path, tiny_data, ten_seconds_an_epoch):
    from imgcls.launch import launch_training

    quiet = {"log": lambda *a, **k: None}
    config = _budget_config(tmp_path, tiny_data)
    whole, metrics = launch_training(config, runs_dir=tmp_path / "whole", callbacks=[ten_seconds_an_epoch()], **quiet)
    assert metrics["status"] == "time_limit" and metrics["epochs_run"] == metrics["epochs_planned"] == 6
    assert metrics["epochs_estimated"] == 6 and metrics["epochs_cap"] == 1000
    lr = [row["lr"] for row in read_history(whole)]
    assert lr[-1] < 0.05 * 1e-3  # annealed at the last epoch, though train.epochs says 1000

    resumed_dir = tmp_path / "resumed"
    interrupted, metrics = launch_training(config, runs_dir=resumed_dir, callbacks=[ten_seconds_an_epoch(), InterruptAfter(3)],
                                           **quiet)
    assert metrics["status"] == "interrupted"
    _, metrics = launch_training(interrupted, resume=True, runs_dir=resumed_dir, callbacks=[ten_seconds_an_epoch()], **quiet)
    assert metrics["status"] == "time_limit" and metrics["epochs_run"] == 6
    assert [row["lr"] for row in read_history(interrupted)] == pytest.approx(lr, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", [{"precision": "mixed_float16"}, {"precision": "mixed_bfloat16", "jit_compile": True}],
                         ids=["mixed_float16", "mixed_bfloat16+xla"])
def test_the_budget_fits_the_schedule_under_mixed_precision_and_xla(tmp_path, tiny_data, ten_seconds_an_epoch, runtime):
    """As a GPU trains: the loss-scale optimizer wraps the schedule, and XLA compiles its read of the plan."""
    from imgcls.launch import launch_training

    config = write_config(tmp_path / "c.yaml", tiny_data, data={"batch_size": 9}, runtime=runtime,
                          train={"epochs": 1000, "time_limit_minutes": 1, "learning_rate": 1e-3,
                                 "schedule": {"name": "cosine_decay", "warmup_epochs": 1}})
    run, metrics = launch_training(config, runs_dir=tmp_path / "runs", callbacks=[ten_seconds_an_epoch()],
                                   log=lambda *a, **k: None)
    assert metrics["status"] == "time_limit" and metrics["epochs_run"] == 6
    assert read_history(run)[-1]["lr"] < 0.05 * 1e-3


@pytest.mark.slow
def test_a_real_budget_ends_within_itself_plus_one_epoch_with_the_schedule_annealed(cli, tmp_path, tiny_data):
    config = write_config(tmp_path / "c.yaml", tiny_data, data={"batch_size": 4},
                          train={"epochs": 1000, "time_limit_minutes": 0.25, "learning_rate": 1e-3,
                                 "schedule": {"name": "cosine_decay", "warmup_epochs": 1}})
    result = cli("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "time budget: the schedule now ends at epoch" in result.stderr
    run = (tmp_path / "runs" / "latest").resolve()
    metrics, history = files.read_json(run / "metrics.json"), read_history(run)
    assert metrics["status"] == "time_limit" and 1 < metrics["epochs_run"] < 1000
    assert metrics["epochs_planned"] == metrics["epochs_run"] and metrics["epochs_estimated"] >= 1
    listed = cli("runs", "--runs-dir", tmp_path / "runs", "--json")
    assert json.loads(listed.stdout)[0]["epochs_planned"] == metrics["epochs_planned"]  # the plan, not the cap of 1000
    assert history[-1]["lr"] < 0.05 * max(row["lr"] for row in history)


@pytest.mark.slow
def test_a_two_phase_run_shares_the_budget_and_a_resume_in_phase_2_keeps_the_layout(tmp_path, tiny_data, mobilenet_weights,
                                                                                     ten_seconds_an_epoch):
    """Head only, then fine-tuning: 30 s each of one minute at 10 s an epoch; the second phase starts right after the first."""
    import yaml

    from imgcls.launch import launch_training

    config = write_config(tmp_path / "c.yaml", tiny_data, data={"batch_size": 9}, evaluate={"after_training": False},
                          train={"epochs": 10, "time_limit_minutes": 1, "learning_rate": 1e-3,
                                 "schedule": {"name": "cosine_decay"},
                                 "fine_tune": {"epochs": 10, "unfreeze": "all", "learning_rate": 1e-4}})
    raw = yaml.safe_load(config.read_text())
    raw["model"] = {"name": "backbone", "backbone": "mobilenet_v3_small", "weights": str(mobilenet_weights)}
    config.write_text(yaml.safe_dump(raw))
    quiet = {"log": lambda *a, **k: None}

    whole, metrics = launch_training(config, runs_dir=tmp_path / "whole", callbacks=[ten_seconds_an_epoch()], **quiet)
    assert metrics["status"] == "time_limit" and metrics["epochs_run"] == 6
    assert [p["epochs"] for p in metrics["phases"]] == [[1, 3], [4, 6]]
    history = read_history(whole)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]  # no gap where phase 1's cap of 10 was
    assert history[2]["lr"] < 0.05 * 1e-3 and history[5]["lr"] < 0.05 * 1e-4  # each phase annealed on its last epoch

    resumed_dir = tmp_path / "resumed"
    stopped, metrics = launch_training(config, runs_dir=resumed_dir, callbacks=[ten_seconds_an_epoch(), InterruptAfter(4)],
                                       **quiet)
    assert metrics["status"] == "interrupted"
    _, metrics = launch_training(stopped, resume=True, runs_dir=resumed_dir, callbacks=[ten_seconds_an_epoch()], **quiet)
    assert metrics["status"] == "time_limit" and [p["epochs"] for p in metrics["phases"]] == [[1, 3], [4, 6]]
    assert [row["lr"] for row in read_history(stopped)] == pytest.approx([row["lr"] for row in history], rel=1e-5)
