"""simple_cnn: the Conv2D / Pooling / Dropout stack of the tutorials, configurable.

The seed notebooks' CNNs are presets of it (`imgcls.models.presets`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from imgcls.models.registry import Options, register_model


class SimpleCNNOptions(Options):
    filters: list[int] = Field([32, 64, 128], description="Conv2D filters, one block each")
    kernel_size: int = Field(3, ge=1, description="square kernel of every Conv2D")
    padding: Literal["valid", "same"] = Field("same", description="Conv2D padding")
    pooling: Literal["avg", "max"] = Field("max", description="pooling after a block: avg | max")
    pool: list[bool] | bool = Field(True, description="pool after each block (one bool per block, or one for all)")
    batch_norm: bool = Field(True, description="BatchNormalization after each Conv2D")
    dropout: list[float] | float = Field(0.0, description="dropout after each block (one rate per block, or one for all)")
    head: Literal["flatten", "gap"] = Field("gap", description="flatten (the tutorials) | gap (global average pooling: far fewer weights)")
    dense: list[int] = Field([128], description="hidden Dense layers before the output layer")
    head_dropout: float = Field(0.3, ge=0, lt=1, description="dropout before the output layer")

    @model_validator(mode="after")
    def _per_block_lists(self) -> SimpleCNNOptions:
        for key in ("pool", "dropout"):
            value = getattr(self, key)
            if isinstance(value, list) and len(value) != len(self.filters):
                raise ValueError(f"{key} needs one entry per block ({len(self.filters)} filters), got {len(value)}")
        rates = self.dropout if isinstance(self.dropout, list) else [self.dropout]
        if any(not 0 <= rate < 1 for rate in rates):
            raise ValueError("dropout rates must be in [0, 1)")
        return self

    def per_block(self, key: str) -> list:
        value = getattr(self, key)
        return value if isinstance(value, list) else [value] * len(self.filters)


@register_model(SimpleCNNOptions)
def simple_cnn(x, options: SimpleCNNOptions):
    """Conv blocks (Conv2D, optional BatchNorm, pooling, dropout), then a dense head."""
    from keras import layers

    pool_layer = layers.AveragePooling2D if options.pooling == "avg" else layers.MaxPooling2D
    for filters, pool, rate in zip(options.filters, options.per_block("pool"), options.per_block("dropout")):
        x = layers.Conv2D(filters, options.kernel_size, padding=options.padding,
                          activation=None if options.batch_norm else "relu")(x)
        if options.batch_norm:
            # momentum 0.9, not Keras' 0.99: small datasets have few steps per
            # epoch, and slow moving statistics make early validation useless.
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.Activation("relu")(x)
        if pool:
            x = pool_layer(2)(x)
        if rate:
            x = layers.Dropout(rate)(x)
    x = layers.Flatten()(x) if options.head == "flatten" else layers.GlobalAveragePooling2D()(x)
    for units in options.dense:
        x = layers.Dense(units, activation="relu")(x)
    if options.head_dropout:
        x = layers.Dropout(options.head_dropout)(x)
    return x
