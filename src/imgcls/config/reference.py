"""The reference config: every key with its default and meaning, as commented YAML (`imgcls config --defaults`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from imgcls.config.schedules import CosineDecay, ExponentialDecay, PiecewiseConstant
from imgcls.config.schema import (
    CallbacksConfig, DataConfig, EvaluateConfig, FineTuneConfig, ModelConfig, RuntimeConfig, TrainConfig,
)


def render_defaults() -> str:
    """Every key with its default and description, as a commented YAML file."""
    from imgcls.models.registry import MODELS

    lines = ["# imgcls reference config: every key, its default and what it means.",
             "# Only data.dir (or data.tfds) is required. Override any key with --set section.key=value."]
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                "callbacks": CallbacksConfig, "evaluate": EvaluateConfig, "runtime": RuntimeConfig}
    for section, cls in sections.items():
        lines.append("")
        lines.append(f"{section}:")
        lines += _render_section(cls, indent=1)
        if section == "model":
            default = MODELS[ModelConfig.model_fields["name"].default]
            lines.append(f"  # options of {default.name} (each model has its own; `imgcls models` lists them):")
            lines += _render_section(default.options, indent=1)
        if section == "train":
            for variant in (ExponentialDecay, CosineDecay, PiecewiseConstant):
                lines.append(f"  # schedule: {{name: {variant.model_fields['name'].annotation.__args__[0]}, ...}} options:")
                lines += ["  #" + line[1:] for line in _render_section(variant, indent=1) if "name:" not in line]
            lines.append("  # fine_tune: {...} options:")
            lines += ["  #" + line[1:] for line in _render_section(FineTuneConfig, indent=1)]
    return "\n".join(lines) + "\n"


def _render_section(cls: type[BaseModel], indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and field.default_factory:
            lines.append(f"{pad}{name}:")
            lines += _render_section(annotation, indent + 1)
            continue
        if field.is_required():
            value = "<required>"
        elif (field.json_schema_extra or {}).get("reference"):
            value = field.json_schema_extra["reference"]  # optional in the schema, but one of two is needed
        else:
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            value = yaml.safe_dump(_yaml_value(default), default_flow_style=True).strip().removesuffix("...").strip()
        comment = f"  # {field.description}" if field.description else ""
        lines.append(f"{pad}{name}: {value}{comment}")
    return lines


def _yaml_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value
