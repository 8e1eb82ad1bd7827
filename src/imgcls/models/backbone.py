"""backbone: a keras.applications network (optionally pretrained) with a small head.

    model: {name: backbone, backbone: efficientnet_b0, weights: imagenet, dropout: 0.2}

The backbone is one nested Keras model (`find_backbone`), so training can
freeze it for the first phase of transfer learning and unfreeze it (all, or
its top N layers) for fine-tuning (see `imgcls.training.phases`). The head is
global average pooling and dropout; `build_model` adds the output layer.

Each backbone was trained on its own input normalisation, so this builder
is registered with `rescale=False`: it gets raw 0-255 pixels and applies that
backbone's `preprocess_input` with serialisable Keras layers (no Lambda, so
`best.keras` loads with `safe_mode=True`):

    caffe (vgg16, resnet50)   RGB -> BGR and minus the ImageNet mean: a fixed 1x1 convolution
    tf (mobilenet_v2)         x / 127.5 - 1: Rescaling(scale, offset)
    built in (the others)     the application's own include_preprocessing / normalisation layers

`weights`: imagenet (Keras downloads it once into its cache, ~/.keras/models),
none (random initialisation), or the path of a weights file saved from the
same application without its top (`app.save_weights("x.weights.h5")`, or a
Keras `*_notop.h5` download). Pretrained backbones are called with
`training=False`: their BatchNormalization layers stay in inference mode,
also while fine-tuning, as Keras recommends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from imgcls.errors import ImgclsError, first_line
from imgcls.models.registry import Options, register_model

# name -> (keras.applications constructor, preprocessing, extra constructor arguments)
BACKBONES = {
    "vgg16": ("VGG16", "caffe", {}),
    "resnet50": ("ResNet50", "caffe", {}),
    "mobilenet_v2": ("MobileNetV2", "tf", {}),
    "mobilenet_v3_small": ("MobileNetV3Small", "built_in", {"include_preprocessing": True}),
    "mobilenet_v3_large": ("MobileNetV3Large", "built_in", {"include_preprocessing": True}),
    "efficientnet_b0": ("EfficientNetB0", "built_in", {}),  # always normalises inside
    "efficientnet_v2_b0": ("EfficientNetV2B0", "built_in", {"include_preprocessing": True}),
    "convnext_tiny": ("ConvNeXtTiny", "built_in", {"include_preprocessing": True}),
}
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode "caffe"


class BackboneOptions(Options):
    backbone: Literal[tuple(BACKBONES)] = Field("efficientnet_b0", description=" | ".join(BACKBONES))
    weights: str = Field(
        "imagenet", description="imagenet (Keras' download and cache) | none (random) | path to a .h5 / .weights.h5 "
        "file saved from the same backbone without its top"
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout between global average pooling and the output layer")

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, value: str) -> str:
        if value in ("imagenet", "none") or value.endswith(".h5"):
            return value
        raise ValueError("use imagenet, none, or the path of a .weights.h5 (or Keras *_notop.h5) file")

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"


@register_model(BackboneOptions, rescale=False)
def backbone(x, options: BackboneOptions):
    """A keras.applications backbone (imagenet, none or a weights file) with its own preprocessing, GAP and dropout."""
    from keras import layers

    if x.shape[-1] == 1:  # grayscale: every backbone expects three channels
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    x = _preprocess(x, BACKBONES[options.backbone][1])
    net = _application(options, tuple(x.shape[1:]))
    # A pretrained backbone keeps BatchNormalization in inference mode (also when unfrozen);
    # one trained from scratch must update its statistics.
    x = net(x, training=False) if options.pretrained else net(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if options.dropout:
        x = layers.Dropout(options.dropout, name="head_dropout")(x)
    return x


def find_backbone(model):
    """The nested application model inside a built model, or None for models without one."""
    import keras

    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def set_backbone_trainable(model, part: str | int) -> None:
    """Make all, none or the top N layers of the model's backbone trainable (compile again afterwards).

    BatchNormalization layers stay frozen, as in Keras' fine-tuning guide: the
    pretrained backbone already runs them in inference mode (training=False).
    """
    import keras

    net = find_backbone(model)
    if net is None:
        raise ImgclsError(f"train.fine_tune: model {model.name} has no backbone to freeze; use model.name: backbone")
    net.trainable = part != "none"
    if part == "none":
        return
    first = 0 if part == "all" else len(net.layers) - int(part)
    for index, layer in enumerate(net.layers):
        layer.trainable = index >= first and not isinstance(layer, keras.layers.BatchNormalization)


def _preprocess(x, mode: str):
    """The backbone's preprocess_input, as layers that save and load safely."""
    import numpy as np
    from keras import layers

    if mode == "tf":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
    if mode == "caffe":
        # Output channel j is input channel 2 - j minus its ImageNet mean: RGB -> BGR, centred.
        conv = layers.Conv2D(3, 1, trainable=False, name="preprocess")
        y = conv(x)
        kernel = np.zeros((1, 1, 3, 3), "float32")
        for j in range(3):
            kernel[0, 0, 2 - j, j] = 1.0
        conv.set_weights([kernel, -np.array(IMAGENET_MEAN_BGR, "float32")])
        return y
    return x  # built in: the application normalises 0-255 input itself


def _application(options: BackboneOptions, input_shape: tuple):
    """The keras.applications model without its top, with the weights `options.weights` names."""
    import keras

    constructor, _, extra = BACKBONES[options.backbone]
    make = getattr(keras.applications, constructor)
    if options.weights == "imagenet":
        try:
            return make(include_top=False, weights="imagenet", input_shape=input_shape, **extra)
        except Exception as exc:  # Keras raises a bare Exception for a failed download
            if "URL fetch failure" not in str(exc) and "http" not in str(exc):
                raise
            raise ImgclsError(_download_failed(options.backbone, str(exc))) from None
    net = make(include_top=False, weights=None, input_shape=input_shape, **extra)
    if options.weights != "none":
        path = Path(options.weights).expanduser()
        if not path.is_file():
            raise ImgclsError(f"model.weights: file not found: {path} (give a .weights.h5 saved from "
                              f"keras.applications.{constructor}(include_top=False), or use imagenet or none)")
        try:
            net.load_weights(str(path))
        except Exception as exc:  # noqa: BLE001 - any mismatch is the user's file, not a bug
            raise ImgclsError(f"model.weights: {path} does not fit {options.backbone} without its top "
                              f"({first_line(exc, 160)})") from None
    return net


def _download_failed(name: str, message: str) -> str:
    """One line: which file Keras could not download, and where to put it instead."""
    url = next((word.rstrip(":") for word in message.split() if word.startswith("http")), "")
    filename = url.rsplit("/", 1)[-1] or f"the {name} notop weights file"
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return (f"model.weights: imagenet weights for {name} could not be downloaded ({url or 'no network'}); "
            f"put {filename} into {cache}/ (Keras' cache), or set model.weights to none or to a local .weights.h5 file")
