"""The model registry: `@register_model` builders, looked up by name.

A builder is a small function `builder(inputs, options) -> features` that
turns the input tensor into a feature tensor with the Keras functional API.
imgcls adds the input, the rescaling to [0, 1] and the output layer itself
(see `imgcls.models.build_model`), so no builder can get the output
activation, its dtype or the loss pairing wrong. A builder registered with
`rescale=False` receives the raw 0-255 pixels instead, because it brings its
own input preprocessing (the pretrained backbones: each was trained with a
different normalisation).

Each builder declares a pydantic `options` class: its keys are what the
config's `model:` section accepts beside `name`. This module imports no
TensorFlow, so config validation stays instant; builders import Keras
inside their bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import Field, create_model

from imgcls.config.schedules import Section


class Options(Section):
    """Base class of a builder's options: a config section (unknown keys are errors, numbers are finite)."""


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    builder: Callable
    options: type[Options]
    description: str
    rescale: bool = True  # False: the builder gets raw 0-255 pixels and normalises them itself


MODELS: dict[str, RegisteredModel] = {}


def register_model(options: type[Options], name: str | None = None, rescale: bool = True):
    """Decorator: make `builder` available as `model.name` in configs.

    `rescale=False`: imgcls does not scale the input to [0, 1] first.
    """

    def decorate(builder: Callable) -> Callable:
        key = name or builder.__name__
        if key in MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        MODELS[key] = RegisteredModel(key, builder, options, doc[0] if doc else "", rescale)
        return builder

    return decorate


def register_preset(name: str, base: str, description: str, **defaults) -> None:
    """`base`'s builder under another name, with other defaults for its options (keras-hub's presets as data)."""
    if name in MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    entry = MODELS[base]
    fields = {key: (entry.options.model_fields[key].annotation,
                    Field(value, description=entry.options.model_fields[key].description)) for key, value in defaults.items()}
    options = create_model(f"{name}_options", __base__=entry.options, **fields)
    MODELS[name] = RegisteredModel(name, entry.builder, options, description, entry.rescale)
