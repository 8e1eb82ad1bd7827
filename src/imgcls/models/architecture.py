"""A model as the stages people draw: convolutions grouped with their pooling, then the dense head.

    model_stages(model)     [Stage("Conv 3x3 x2, MaxPool", "112x112x64", 38,720), ...]: what `imgcls.plots.plot_architecture`
                            draws for `imgcls summary --diagram` and every run's model.png

A stage ends at each pooling layer (or at the head's Flatten / global
pooling); a nested keras.applications backbone is one stage; each Dense layer
is its own. BatchNormalization, activations and dropout belong to the stage
they sit in and are not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DRAWN_ALONE = ("Dense",)
ENDS_A_STAGE = ("MaxPooling2D", "AveragePooling2D")
STARTS_THE_HEAD = ("Flatten", "GlobalAveragePooling2D", "GlobalMaxPooling2D")  # a stage of its own: 7x7x512 -> 25088
NOT_NAMED = ("BatchNormalization", "Activation", "ReLU", "Dropout", "SpatialDropout2D", "InputLayer", "Rescaling")


@dataclass
class Stage:
    """One block of the figure: what it holds, the shape it outputs, its parameters."""

    parts: list[str] = field(default_factory=list)
    shape: tuple = ()
    params: int = 0
    kind: str = "conv"  # input | conv | backbone | head | output

    @property
    def label(self) -> str:
        if "Add" in self.parts:  # residual blocks: their convolutions and shortcuts, counted
            convs = sum(part.startswith("Conv") for part in self.parts)
            return f"Residual x{self.parts.count('Add')}\n({convs} convs)"
        counted: list[list] = []
        for part in self.parts:  # "Conv 3x3", "Conv 3x3", "MaxPool" -> "Conv 3x3 x2", "MaxPool"
            if counted and counted[-1][0] == part:
                counted[-1][1] += 1
            else:
                counted.append([part, 1])
        return "\n".join(f"{part} x{n}" if n > 1 else part for part, n in counted)

    @property
    def shape_text(self) -> str:
        return "x".join(str(n) for n in self.shape if n is not None)


def model_stages(model) -> list[Stage]:
    """The model's stages, input first and the class probabilities last."""
    input_shape = tuple(model.inputs[0].shape[1:])
    stages = [Stage(["input image"], input_shape, 0, "input")]
    current = Stage()
    for layer in model.layers[1:]:
        kind = type(layer).__name__
        shape = tuple(_output_shape(layer)[1:])
        params = int(layer.count_params()) if layer.built else 0
        if hasattr(layer, "layers"):  # a nested backbone
            stages += _flush(current)
            stages.append(Stage([layer.name, "backbone", f"{len(layer.layers)} layers"], shape, params, "backbone"))
            current = Stage()
        elif kind in DRAWN_ALONE:
            stages += _flush(current)
            final = layer.name == "logits"
            stages.append(Stage([f"Dense {shape[-1]}" + ("\nsoftmax" if final else "")], shape, params,
                                "output" if final else "head"))
            current = Stage()
        elif kind in STARTS_THE_HEAD:
            stages += _flush(current)
            stages.append(Stage([_part_name(layer)], shape, params, "head"))
            current = Stage()
        else:
            name = _part_name(layer)
            if "Conv" in kind and current.parts and len(shape) == 3 and current.shape[:2] != shape[:2] \
                    and getattr(layer, "strides", (1, 1)) != (1, 1):
                stages += _flush(current)  # a strided convolution starts a stage (ResNet downsamples so)
                current = Stage()
            if name:
                current.parts.append(name)
            current.params += params
            current.shape = shape
            if kind in ENDS_A_STAGE:
                stages += _flush(current)
                current = Stage()
    stages += _flush(current)
    return stages


def draw_architecture(model, out) -> None:
    """The figure of `model_stages` into `out` (.png, .svg or .pdf)."""
    from imgcls.plots import plot_architecture

    stages = model_stages(model)
    classes = stages[-1].shape[-1] if stages[-1].shape else "?"
    plot_architecture(stages, f"{model.name}: {int(model.count_params()):,} parameters, {classes} outputs", out)


def _flush(stage: Stage) -> list[Stage]:
    if not stage.parts:
        return []
    if len(stage.shape) == 1:
        stage.kind = "head"
    return [stage]


def _output_shape(layer):
    return layer._inbound_nodes[-1].output_tensors[0].shape  # a nested model's own .output is its inner graph's


def _part_name(layer) -> str:
    kind = type(layer).__name__
    if kind in NOT_NAMED:
        return ""
    if "Conv" in kind:
        size = "x".join(map(str, getattr(layer, "kernel_size", ())))
        return f"{kind.replace('2D', '').replace('Conv', 'Conv')} {size}".strip()
    return {"MaxPooling2D": "MaxPool", "AveragePooling2D": "AvgPool", "GlobalAveragePooling2D": "GlobalAvgPool",
            "GlobalMaxPooling2D": "GlobalMaxPool"}.get(kind, kind)
