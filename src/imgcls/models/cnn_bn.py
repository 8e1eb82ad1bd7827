"""cnn_bn: the food-11 classifier (Conv3x3-BatchNorm-ReLU-MaxPool blocks).

Five blocks of 64-128-256-512-512 filters halve a 128x128 image to 4x4,
then Dense 1024-512 before the output layer, as in the lecture homework.
"""

from __future__ import annotations

from pydantic import Field

from imgcls.models.registry import Options, register_model


class CNNBNOptions(Options):
    filters: list[int] = Field([64, 128, 256, 512, 512], description="filters of each Conv-BN-ReLU-MaxPool block")
    dense: list[int] = Field([1024, 512], description="hidden Dense layers")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden Dense layer")


@register_model(CNNBNOptions)
def cnn_bn(x, options: CNNBNOptions):
    """Conv3x3-BatchNorm-ReLU-MaxPool blocks, then Dense layers."""
    from keras import layers

    for filters in options.filters:
        x = layers.Conv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    for units in options.dense:
        x = layers.Dense(units, activation="relu")(x)
        if options.dropout:
            x = layers.Dropout(options.dropout)(x)
    return x
