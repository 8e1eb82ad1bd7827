"""resnet_small: a CIFAR-style ResNet (He et al. 2016, section 4.2) for small images trained from scratch.

A 3x3 stem, then stages of basic residual blocks (two Conv3x3-BatchNorm,
an identity shortcut, a 1x1 projection where the shape changes); each stage
after the first halves the resolution and doubles the width. Global average
pooling ends it. With widths 16-32-64 and 3 blocks a stage it is ResNet-20
(0.27 M weights); the defaults (2 blocks, ResNet-14) are cheaper on a CPU.
`stem_stride: 2` halves a larger image (96 px and up) before the first stage.
"""

from __future__ import annotations

from pydantic import Field

from imgcls.models.registry import Options, register_model


class ResNetSmallOptions(Options):
    widths: list[int] = Field([16, 32, 64], min_length=1, description="filters of each stage (each after the first halves the resolution)")
    blocks_per_stage: int = Field(2, ge=1, description="basic residual blocks per stage (3 = ResNet-20)")
    stem_stride: int = Field(1, ge=1, le=4, description="stride of the stem convolution: 2 for images of 96 px and up")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the output layer")


def _conv_bn(x, filters: int, stride: int = 1, kernel: int = 3, relu: bool = True):
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
    # momentum 0.9, as in simple_cnn: few steps per epoch on small datasets.
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.Activation("relu")(x) if relu else x


def _basic_block(x, filters: int, stride: int):
    from keras import layers

    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, stride, kernel=1, relu=False)
    x = _conv_bn(x, filters, stride)
    x = _conv_bn(x, filters, relu=False)
    return layers.Activation("relu")(layers.Add()([x, shortcut]))


@register_model(ResNetSmallOptions)
def resnet_small(x, options: ResNetSmallOptions):
    """A CIFAR-style ResNet: basic residual blocks with BatchNorm in three stages, then global average pooling."""
    from keras import layers

    x = _conv_bn(x, options.widths[0], options.stem_stride)
    for stage, filters in enumerate(options.widths):
        for block in range(options.blocks_per_stage):
            x = _basic_block(x, filters, stride=2 if stage > 0 and block == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    if options.head_dropout:
        x = layers.Dropout(options.head_dropout)(x)
    return x
