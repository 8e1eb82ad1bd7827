"""vgg16: VGG-16 built layer by layer, as in the coffee-beans tutorial.

13 Conv3x3 layers in 5 blocks, each block ending in 2x2 max pooling, then
fc 4096-4096. At 224x224 and 4 classes: 134,276,932 parameters, most of
them in the first fc layer; `head: gap` swaps Flatten and the fc layers for
global average pooling (14.7 M parameters) and `width` scales every layer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from imgcls.models.registry import Options, register_model

BLOCKS = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]  # (filters, convs) per block


class VGG16Options(Options):
    head: Literal["flatten", "gap"] = Field("flatten", description="flatten (original) | gap (global average pooling)")
    fc_units: list[int] | None = Field(None, description="hidden Dense layers; null = [4096, 4096] with flatten, none with gap")
    width: float = Field(1.0, gt=0, le=4, description="multiplies every conv and fc width (0.25 = a quarter)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden Dense layer")


@register_model(VGG16Options)
def vgg16(x, options: VGG16Options):
    """VGG-16 (13 conv + 2 fc), built layer by layer."""
    from keras import layers

    for block, (filters, convs) in enumerate(BLOCKS, start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(max(1, round(filters * options.width)), 3, padding="same", activation="relu",
                              name=f"block{block}_conv{conv}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x) if options.head == "flatten" else layers.GlobalAveragePooling2D(name="gap")(x)
    fc_units = options.fc_units if options.fc_units is not None else ([4096, 4096] if options.head == "flatten" else [])
    for i, units in enumerate(fc_units, start=1):
        x = layers.Dense(max(1, round(units * options.width)), activation="relu", name=f"fc{i}")(x)
        if options.dropout:
            x = layers.Dropout(options.dropout)(x)
    return x
