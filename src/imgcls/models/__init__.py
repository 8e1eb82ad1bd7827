"""Models: the registry of builders and the one factory, `build_model`.

    model = build_model(config, num_classes=17)

`build_model` wraps the chosen builder between the parts imgcls owns:
raw 0-255 pixels in (so a saved model needs no outside preprocessing),
`Rescaling(1/255)` (unless the builder was registered with `rescale=False`
and normalises the pixels itself, as the pretrained backbones do), the
builder's features, and a float32 output layer (softmax, or one sigmoid
unit for label_mode binary) that matches the loss `build_loss` gives.

`inference_model` is the same network as every artifact holds it (best.keras,
each export, what predict and evaluate run): float32, without the optimizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Importing the builder modules registers them.
from imgcls.errors import ImgclsError, first_line
from imgcls.models import backbone, cnn_bn, presets, resnet, simple_cnn, vgg  # noqa: F401
from imgcls.models.registry import MODELS, register_model

if TYPE_CHECKING:
    import keras

    from imgcls.config import Config

__all__ = ["MODELS", "build_loss", "build_model", "inference_model", "register_model", "output_units"]


def output_units(label_mode: str, num_classes: int) -> int:
    return 1 if label_mode == "binary" else num_classes


def build_loss(config: Config) -> keras.losses.Loss:
    """The loss for `config.loss`; the model ends in softmax/sigmoid, so never from_logits."""
    import keras

    smoothing = config.train.label_smoothing
    if config.loss == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    if config.loss == "categorical_crossentropy":
        return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def build_model(config: Config, num_classes: int) -> keras.Model:
    """The model `config.model` names, for `num_classes` classes, not yet compiled."""
    import keras

    entry = MODELS[config.model.name]
    options = entry.options.model_validate(config.model.options)
    height, width = config.data.image_size

    inputs = keras.Input(shape=(height, width, config.channels), name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescaling")(inputs) if entry.rescale else inputs
    try:
        x = entry.builder(x, options)
    except ValueError as exc:  # e.g. the image shrinks to nothing before the last conv
        raise ImgclsError(
            f"model {config.model.name} cannot be built for data.image_size {height}x{width}: "
            f"{first_line(exc, 160)}; use larger images or fewer blocks"
        ) from None
    binary = config.data.label_mode == "binary"
    logits = keras.layers.Dense(output_units(config.data.label_mode, num_classes), name="logits")(x)
    # float32 even under a mixed policy: softmax and the loss need the range.
    outputs = keras.layers.Activation("sigmoid" if binary else "softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=config.model.name)


def inference_model(model: keras.Model) -> keras.Model:
    """`model` as an artifact holds it: float32 compute, no optimizer or compile state.

    Mixed precision is a training-time setting, but a saved layer keeps its
    dtype policy: a model trained under mixed_bfloat16 or mixed_float16 would
    compute in half precision wherever it is loaded (several times slower on a
    CPU without native bf16) and TFLite cannot convert it at all. A mixed
    model's weights are float32 already, so a float32 copy with the same
    weights computes what training computed, only more exactly. A float32
    model is not copied: the result shares its layers, without its optimizer.
    """
    import keras

    network = keras.Model(model.inputs, model.outputs, name=model.name)  # the same layers, uncompiled
    if not half_precision_layers(model):
        return network
    copy = keras.models.clone_model(network, clone_function=_float32_layer, recursive=True)
    copy.set_weights(network.get_weights())
    return copy


def half_precision_layers(model: keras.Model) -> list[str]:
    """Names of the layers (nested models' included) that compute in float16 or bfloat16."""
    return [layer.name for layer in _all_layers(model) if _computes_in_half(layer)]


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model, e.g. a keras.applications backbone
            yield from _all_layers(layer)


def _computes_in_half(layer) -> bool:
    policy = getattr(layer, "dtype_policy", None)  # operations such as `x + y` have none
    return policy is not None and policy.compute_dtype in ("float16", "bfloat16")


def _float32_layer(layer):
    config = layer.get_config()
    if _computes_in_half(layer):
        config["dtype"] = "float32"
    return layer.__class__.from_config(config)
