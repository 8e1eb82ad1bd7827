"""The model registry: every registered model saves and reloads safely; the seed architectures' exact parameter counts."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.config import load_config
from imgcls.models import MODELS, build_model, inference_model
from imgcls.models.backbone import BACKBONES


def model_for(name: str, num_classes: int, size: int = 224, label_mode: str = "int", **options):
    config = load_config(raw={"data": {"dir": "x", "image_size": size, "label_mode": label_mode},
                              "model": {"name": name, **options}})
    return build_model(config, num_classes)


@pytest.mark.parametrize("name, classes, size, params", [
    ("celebs_cnn", 17, 224, 9_536_945),     # seeds 000/004
    ("monkeypox_cnn", 2, 224, 22_175_138),  # seed 003
    ("vgg16", 4, 224, 134_276_932),         # seed 001
])
def test_seed_architectures_have_the_tutorials_parameter_counts(name, classes, size, params):
    assert model_for(name, classes, size).count_params() == params


def test_cnn_bn_is_the_food11_network():
    model = model_for("cnn_bn", 11, 128)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [64, 128, 256, 512, 512]
    assert model.get_layer("logits").input.shape[-1] == 512


def test_resnet_small_with_three_blocks_a_stage_is_resnet_20():
    model = model_for("resnet_small", 10, 32, widths=[16, 32, 64], blocks_per_stage=3)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == 19 + 2  # 6n+1 = 19 weighted 3x3 layers besides the output, and two 1x1 projections
    assert model.count_params() == 274_042  # the paper's 0.27 M
    assert model.get_layer("logits").input.shape[-1] == 64


def test_vgg16_gap_head_is_an_order_of_magnitude_lighter():
    assert model_for("vgg16", 4, 224, head="gap").count_params() == 14_716_740


def test_an_image_too_small_for_the_model_is_a_clear_error():
    from imgcls.errors import ImgclsError

    with pytest.raises(ImgclsError, match="celebs_cnn cannot be built for data.image_size 32x32"):
        model_for("celebs_cnn", 3, 32)


def test_output_is_float32_probabilities_even_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = model_for("simple_cnn", 3, 32, filters=[4], dense=[8])
        probs = np.asarray(model(np.random.uniform(0, 255, (2, 32, 32, 3)).astype("float32")))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("probabilities").dtype_policy.compute_dtype == "float32"
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_binary_label_mode_gets_one_sigmoid_unit():
    model = model_for("simple_cnn", 2, 32, label_mode="binary", filters=[4], dense=[8])
    assert model.output.shape[-1] == 1
    assert model.get_layer("probabilities").get_config()["activation"] == "sigmoid"


def test_model_takes_raw_pixels_and_rescales_inside():
    model = model_for("simple_cnn", 3, 32, filters=[4], dense=[8])
    assert model.layers[1].name == "rescaling"


# Every registered model with its defaults, and the backbone model with each backbone (weights none:
# imagenet cannot be downloaded in tests). A model registered tomorrow is covered the day it lands.
REGISTERED = [pytest.param(name, {}, id=name) for name in sorted(MODELS) if name != "backbone"] + [
    pytest.param("backbone", {"backbone": b, "weights": "none"}, id=f"backbone-{b}", marks=pytest.mark.slow) for b in BACKBONES]


@pytest.mark.parametrize("name, options", REGISTERED)
def test_every_registered_model_saves_reloads_in_safe_mode_and_predicts_the_same(tmp_path, name, options):
    from imgcls.infer.classifier import load_keras

    model = model_for(name, 3, 64, **options)
    inference_model(model).save(tmp_path / "model.keras")
    reloaded = load_keras(tmp_path / "model.keras")  # safe mode: no Lambda layer anywhere
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = model.predict_on_batch(images)
    assert expected.shape == (2, 3)
    np.testing.assert_allclose(reloaded.predict_on_batch(images), expected, rtol=1e-4, atol=1e-5)
