"""Pretrained backbones: their own preprocessing inside the model, weights from a file, clear download errors, fine-tuning."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import yaml

from conftest import write_config
from imgcls.config import load_config
from imgcls.errors import ImgclsError
from imgcls.models import build_model
from imgcls.models.backbone import find_backbone


def backbone_model(size: int = 32, num_classes: int = 3, **options):
    config = load_config(raw={"data": {"dir": "x", "image_size": size}, "model": {"name": "backbone", **options}})
    return build_model(config, num_classes)


@pytest.mark.parametrize("name, module", [("vgg16", "vgg16"), ("resnet50", "resnet50"), ("mobilenet_v2", "mobilenet_v2")])
def test_backbone_gets_raw_pixels_and_applies_its_own_preprocess_input(name, module):
    model = backbone_model(backbone=name, weights="none")
    assert "rescaling" not in [layer.name for layer in model.layers]  # no 1/255 before a backbone
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    features = keras.Model(model.input, model.get_layer("gap").output)(pixels)
    preprocess = getattr(keras.applications, module).preprocess_input
    expected = keras.ops.mean(find_backbone(model)(preprocess(pixels.copy()), training=False), axis=(1, 2))
    np.testing.assert_allclose(np.asarray(features), np.asarray(expected), atol=1e-4)


def test_grayscale_images_feed_a_backbone_as_three_channels():
    config = load_config(raw={"data": {"dir": "x", "image_size": 32, "color_mode": "grayscale"},
                              "model": {"name": "backbone", "backbone": "mobilenet_v3_small", "weights": "none"}})
    assert build_model(config, 3).input.shape[-1] == 1


def test_local_weights_file_is_loaded_into_the_backbone(mobilenet_weights):
    model = backbone_model(backbone="mobilenet_v3_small", weights=str(mobilenet_weights))
    saved = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    saved.load_weights(mobilenet_weights)
    for ours, theirs in zip(find_backbone(model).weights, saved.weights):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_weights_of_another_backbone_are_a_clear_error(mobilenet_weights):
    with pytest.raises(ImgclsError, match=r"model.weights: .*mobilenet_v3_small.weights.h5 does not fit efficientnet_b0"):
        backbone_model(backbone="efficientnet_b0", weights=str(mobilenet_weights))


def test_missing_weights_file_is_named():
    with pytest.raises(ImgclsError, match="model.weights: file not found: nowhere/b0.weights.h5"):
        backbone_model(backbone="efficientnet_b0", weights="nowhere/b0.weights.h5")


def test_failed_imagenet_download_names_the_file_and_the_keras_cache(monkeypatch):
    from keras.src.applications import mobilenet_v3

    url = "https://storage.googleapis.com/keras-applications/weights_mobilenet_v3_small_notop.h5"

    def offline(*args, **kwargs):
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(mobilenet_v3.file_utils, "get_file", offline)
    with pytest.raises(ImgclsError) as error:
        backbone_model(backbone="mobilenet_v3_small", weights="imagenet")
    message = str(error.value)
    assert "put weights_mobilenet_v3_small_notop.h5 into" in message and ".keras/models" in message
    assert "model.weights to none or to a local .weights.h5 file" in message and "\n" not in message


def test_fine_tune_needs_a_pretrained_backbone():
    with pytest.raises(ImgclsError, match="train.fine_tune: needs model.name: backbone"):
        load_config(raw={"data": {"dir": "x"}, "train": {"fine_tune": {"epochs": 2}}})
    with pytest.raises(ImgclsError, match="train.fine_tune: a backbone with model.weights: none"):
        load_config(raw={"data": {"dir": "x"}, "model": {"name": "backbone", "weights": "none"},
                         "train": {"fine_tune": {"epochs": 2}}})


def test_frozen_phase_trains_only_the_head_and_unfreezing_top_layers_keeps_batchnorm_frozen(mobilenet_weights):
    from imgcls.models.backbone import set_backbone_trainable

    model = backbone_model(backbone="mobilenet_v3_small", weights=str(mobilenet_weights))
    set_backbone_trainable(model, "none")
    assert [w.path for w in model.trainable_weights] == ["logits/kernel", "logits/bias"]
    set_backbone_trainable(model, 10)
    unfrozen = [layer for layer in find_backbone(model).layers if layer.trainable]
    assert unfrozen and all(not isinstance(layer, keras.layers.BatchNormalization) for layer in unfrozen)
    assert set(unfrozen) <= set(find_backbone(model).layers[-10:])


@pytest.mark.slow
def test_transfer_learning_runs_two_phases_as_one_run(cli, tmp_path, tiny_data, mobilenet_weights):
    config = write_config(tmp_path / "pretrained.yaml", tiny_data,
                          train={"epochs": 1, "learning_rate": 1e-3, "ema": True,
                                 "fine_tune": {"epochs": 1, "unfreeze": "all", "learning_rate": 1e-5}})
    raw = yaml.safe_load(config.read_text())
    raw["model"] = {"name": "backbone", "backbone": "mobilenet_v3_small", "weights": str(mobilenet_weights)}
    config.write_text(yaml.safe_dump(raw))
    result = cli("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run = (tmp_path / "runs" / "latest").resolve()
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]  # epochs number on across phases
    lr = [float(line.split(",")[history[0].split(",").index("lr")]) for line in history[1:]]
    assert lr[0] == pytest.approx(1e-3) and lr[1] == pytest.approx(1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert [p["epochs"] for p in metrics["phases"]] == [[1, 1], [2, 2]] and metrics["epochs_planned"] == 2
    model = keras.saving.load_model(run / "best.keras", safe_mode=True)  # no Lambda layers anywhere
    probabilities = model.predict(np.full((1, 32, 32, 3), 128, "float32"), verbose=0)
    assert probabilities.shape == (1, 3)
