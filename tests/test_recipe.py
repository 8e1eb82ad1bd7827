"""The training recipe: augmentation on training batches only, EMA weights, the time budget."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from conftest import TINY_MODEL
from imgcls.config import load_config
from imgcls.data.pipeline import make_datasets
from imgcls.data.plan import plan_data
from imgcls.errors import ImgclsError


def datasets_for(data_dir, **data):
    config = load_config(raw={"data": {"dir": str(data_dir), "image_size": 32, "batch_size": 36, "cache": "none",
                                       "validation_split": 0.25, **data}})
    return make_datasets(plan_data(config), config)


def first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def test_augmentation_changes_training_batches_and_never_validation(tiny_data):
    plain, light = datasets_for(tiny_data), datasets_for(tiny_data, augment="light")
    assert not np.allclose(first_batch(plain.train)[0].mean(axis=0), first_batch(light.train)[0].mean(axis=0))
    np.testing.assert_array_equal(first_batch(plain.val)[0], first_batch(light.val)[0])


def test_strong_augmentation_mixes_one_hot_labels(tiny_data):
    images, labels = first_batch(datasets_for(tiny_data, augment="strong", label_mode="categorical").train)
    assert images.min() >= 0 and images.max() <= 255
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
    assert ((labels > 0) & (labels < 1)).any()  # MixUp/CutMix blended some labels


def test_strong_augmentation_needs_one_hot_labels():
    with pytest.raises(ImgclsError, match="data.augment: strong .* set data.label_mode: categorical"):
        load_config(raw={"data": {"dir": "x", "augment": "strong"}})


def test_grayscale_images_stay_one_channel_through_strong_augmentation(tiny_data):
    images, _ = first_batch(datasets_for(tiny_data, augment="strong", label_mode="categorical", color_mode="grayscale").train)
    assert images.shape[-1] == 1


def _fit_tiny(ema: bool, stop_after_first_epoch: bool, checkpoint):
    """A Dense model fitted on random data for 3 planned epochs; returns (initial weights, weights after fit)."""
    from imgcls.training.callbacks import with_ema
    from imgcls.training.optim import build_optimizer

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    config = load_config(raw={"data": {"dir": "x"}, "train": {"learning_rate": 0.5, "ema": ema, "ema_momentum": 0.999}})
    model.compile(optimizer=build_optimizer(config.train, 8), loss="binary_crossentropy")
    initial = model.get_weights()[0].copy()

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = stop_after_first_epoch

    # The order training gives a fit's callbacks (train.callbacks.with_ema): the swap first, the guard last.
    callbacks = with_ema([checkpoint, StopAfterFirstEpoch()], config)
    model.fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), callbacks=callbacks, verbose=0)
    return initial, model.get_weights()[0]


@pytest.mark.slow
@pytest.mark.parametrize("stopped_early", [False, True])
def test_ema_weights_are_in_best_keras_and_in_the_model_after_training(tmp_path, stopped_early):
    saved = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(saved, monitor="val_loss", save_best_only=False)
    initial, raw = _fit_tiny(False, stopped_early, keras.callbacks.Callback())
    initial, averaged = _fit_tiny(True, stopped_early, checkpoint)
    # Momentum 0.999 over <= 24 steps: the average barely leaves the start, the raw weights move far.
    assert np.abs(averaged - initial).max() < 0.2 * np.abs(raw - initial).max()
    np.testing.assert_allclose(keras.saving.load_model(saved).get_weights()[0], averaged, atol=1e-6)


@pytest.mark.slow
def test_time_limit_stops_cleanly_and_writes_every_artifact(cli, tmp_path, tiny_config):
    result = cli("train", tiny_config, "--runs-dir", tmp_path, "--set", "train.epochs=50",
                 "--set", "train.time_limit_minutes=0.001", *(f"--set={s}" for s in TINY_MODEL))
    assert result.exit_code == 0, result.output
    run = (tmp_path / "latest").resolve()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "time_limit" and metrics["epochs_run"] < 50
    for name in ("best.keras", "history.csv", "history.png", "eval.json"):
        assert (run / name).is_file(), name
    history = (run / "history.csv").read_text()
    again = cli("train", "--resume", run)  # its backup went when it ended: nothing to resume, nothing overwritten
    assert again.exit_code == 0 and "already stopped at its time limit; nothing to resume" in again.stderr
    assert (run / "history.csv").read_text() == history
