"""The experiment config: one YAML file, validated before anything else runs.

    schema.py      every key: type, default, meaning (the reference; `imgcls config --defaults`)
    schedules.py   train.schedule's choices
    load.py        YAML -> --set overrides -> pydantic -> checks across keys; one-line errors naming the key
    reference.py   the schema rendered as a commented YAML file

No TensorFlow is imported here.
"""

from imgcls.config.load import load_config
from imgcls.config.schema import (
    Config, DataConfig, RuntimeConfig, TrainConfig, check_device, monitor_mode,
)

__all__ = ["Config", "DataConfig", "RuntimeConfig", "TrainConfig", "check_device", "load_config", "monitor_mode"]
