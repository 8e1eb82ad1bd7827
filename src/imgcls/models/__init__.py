"""Models: the registry of builders and the one factory, `build_model`.

    model = build_model(config, num_classes=17)

`build_model` wraps the chosen builder between the parts imgcls owns:
raw 0-255 pixels in (so a saved model needs no outside preprocessing),
`Rescaling(1/255)` (unless the builder was registered with `rescale=False`
and normalises the pixels itself, as the pretrained backbones do), the
builder's features, and a float32 output layer (softmax, or one sigmoid
unit for label_mode binary) that matches the loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Importing the builder modules registers them.
from imgcls.errors import ImgclsError
from imgcls.models import backbone, cnn_bn, simple_cnn, vgg  # noqa: F401
from imgcls.models.registry import MODELS, register_model

if TYPE_CHECKING:
    import keras

    from imgcls.config import Config

__all__ = ["MODELS", "build_model", "register_model", "output_units"]


def output_units(label_mode: str, num_classes: int) -> int:
    return 1 if label_mode == "binary" else num_classes


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
            f"{str(exc).splitlines()[0][:160]}; use larger images or fewer blocks"
        ) from None
    binary = config.data.label_mode == "binary"
    logits = keras.layers.Dense(output_units(config.data.label_mode, num_classes), name="logits")(x)
    # float32 even under a mixed policy: softmax and the loss need the range.
    outputs = keras.layers.Activation("sigmoid" if binary else "softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=config.model.name)
