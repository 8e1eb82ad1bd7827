"""train.schedule: the learning-rate schedules a config can name, each with its periods in steps or in epochs.

Epochs are converted to optimizer steps with the real steps per epoch
(`imgcls.training.optim.resolve_schedule`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """A config section. A misspelt key is an error (extra="forbid"), never silently ignored; a number is
    finite (no .inf or .nan); and YAML's true / false is never taken for the number 1 / 0."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        """true / false given where a key takes no boolean stays the word, so validation names the key and says why."""
        if isinstance(data, dict):
            data = {name: str(value).lower() if isinstance(value, bool) and name in cls.model_fields
                    and not _accepts_bool(cls.model_fields[name].annotation) else value for name, value in data.items()}
        return data


def _accepts_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_accepts_bool(arg) for arg in get_args(annotation) if not isinstance(arg, str))


class NoSchedule(Section):
    name: Literal["none"] = "none"


class ExponentialDecay(Section):
    name: Literal["exponential_decay"]
    decay_steps: int | None = Field(None, ge=1, description="decay every N optimizer steps (batches, not epochs)")
    decay_epochs: float | None = Field(None, gt=0, description="or every N epochs; converted to steps with the real steps per epoch")
    decay_rate: float = Field(0.96, gt=0, le=1, description="learning rate is multiplied by this every decay period")
    staircase: bool = Field(False, description="decay in steps instead of smoothly")

    @model_validator(mode="after")
    def _one_period(self) -> ExponentialDecay:
        if self.decay_steps is not None and self.decay_epochs is not None:
            raise ValueError("give decay_steps or decay_epochs, not both")
        if self.decay_steps is None and self.decay_epochs is None:
            self.decay_epochs = 1.0
        return self


class CosineDecay(Section):
    name: Literal["cosine_decay"]
    warmup_epochs: float = Field(0, ge=0, description="linear warmup from 0 to learning_rate over this many epochs")
    warmup_steps: int | None = Field(None, ge=0, description="or over this many steps (overrides warmup_epochs)")
    decay_epochs: float | None = Field(None, gt=0, description="epochs of cosine decay after warmup; null = until the last epoch")
    decay_steps: int | None = Field(None, ge=1, description="or decay over this many steps (overrides decay_epochs)")
    alpha: float = Field(0.0, ge=0, le=1, description="final learning rate as a fraction of learning_rate")


class PiecewiseConstant(Section):
    name: Literal["piecewise_constant"]
    boundary_epochs: list[float] | None = Field(None, description="epochs at which the rate changes")
    boundaries: list[int] | None = Field(None, description="or steps at which the rate changes")
    values: list[float] = Field(description="learning rates: one more than boundaries (replaces learning_rate)")

    @model_validator(mode="after")
    def _matching_lengths(self) -> PiecewiseConstant:
        points = self.boundaries if self.boundaries is not None else self.boundary_epochs
        if points is None or (self.boundaries is not None and self.boundary_epochs is not None):
            raise ValueError("give boundaries (steps) or boundary_epochs, exactly one of them")
        if len(self.values) != len(points) + 1:
            raise ValueError(f"values needs {len(points) + 1} entries (one more than the {len(points)} boundaries)")
        if list(points) != sorted(points):
            raise ValueError("boundaries must increase")
        return self


Schedule = Annotated[Union[NoSchedule, ExponentialDecay, CosineDecay, PiecewiseConstant], Field(discriminator="name")]
SCHEDULE_NAMES = ("none", "exponential_decay", "cosine_decay", "piecewise_constant")
