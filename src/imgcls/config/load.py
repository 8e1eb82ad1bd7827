"""Loading a config: YAML (safe loader) -> `--set key=value` overrides -> pydantic -> checks across keys.

Every problem becomes one `ImgclsError` listing each key path with what is
wrong and what is allowed, e.g. "train.epoch: unknown key; did you mean
train.epochs?". No TensorFlow is imported here: config errors answer at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from imgcls.config.schedules import SCHEDULE_NAMES, CosineDecay, ExponentialDecay, NoSchedule, PiecewiseConstant
from imgcls.config.schema import LOSS_FOR_LABEL_MODE, Config, ModelConfig
from imgcls.errors import ConfigError, ImgclsError, did_you_mean, first_line
from imgcls.files import load_yaml


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file as a dict, read with the safe loader (no Python objects; a key given twice is an error)."""
    path = Path(path)
    if not path.is_file():
        raise ImgclsError(f"config file not found: {path} (give the path to a .yaml file, e.g. configs/digits.yaml)")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ImgclsError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ImgclsError(f"{path}{_where(exc)}: malformed YAML: {_problem(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ImgclsError(f"{path}: expected a mapping of sections (data:, model:, train:, ...), got {type(raw).__name__}")
    return raw


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" line {mark.line + 1}" if mark else ""


def _problem(exc: yaml.YAMLError) -> str:
    return getattr(exc, "problem", None) or first_line(exc)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.path=value` strings; values are parsed as YAML (3 -> int, [1, 2] -> list)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ImgclsError(f"--set {_excerpt(item)}: expected key=value, e.g. --set train.epochs=3")
        value = _override_value(item, text)
        node = raw
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ImgclsError(f"--set {_excerpt(item)}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def _override_value(item: str, text: str) -> Any:
    """The value of `--set key=text`, as YAML; a list or mapping that does not parse is an error, not a string."""
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        if text.lstrip()[:1] in "[{":
            raise ImgclsError(f"--set {_excerpt(item)}: the value is not valid YAML ({_problem(exc)}); quote the whole "
                              "option, e.g. --set 'model.filters=[16, 32]'") from None
        return text  # plain text with YAML punctuation in it, e.g. a folder name with ': '


def _excerpt(value: Any, limit: int = 80) -> str:
    """A value as a message shows it: its repr, cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_config(path: Path | str | None = None, overrides: list[str] = (), raw: dict | None = None) -> Config:
    """Read, override and validate a config; raise ConfigError (an ImgclsError) listing every problem."""
    try:
        return _load(path, overrides, raw)
    except ConfigError:
        raise
    except ImgclsError as error:  # the file itself (missing, not YAML) or an --set: a config problem all the same
        raise ConfigError(str(error)) from None


def _load(path: Path | str | None, overrides: list[str], raw: dict | None) -> Config:
    raw = dict(raw) if raw is not None else read_yaml(Path(path))
    raw.pop("imgcls", None)  # versions and resolved values a run's config.yaml records; not settings
    raw = apply_overrides(raw, list(overrides))
    if raw.get("data") is None:
        raw["data"] = {}  # so the message names the one required key, data.dir
    source = f"{path}: " if path else ""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source + "; ".join(_describe_all(exc.errors()))) from None
    problems = _validate_model_options(config) + _check_combinations(config)
    if problems:
        raise ConfigError(source + "; ".join(problems))
    return config


def _validate_model_options(config: Config) -> list[str]:
    """Check `model.*` against the chosen builder's options and fill in its defaults."""
    from imgcls.models.registry import MODELS

    name = config.model.name
    if name not in MODELS:
        return [f"model.name: unknown model {name!r}{_suggest(name, list(MODELS), '')}; known: {', '.join(sorted(MODELS))}"]
    try:
        options = MODELS[name].options.model_validate(config.model.options)
    except ValidationError as exc:
        return _describe_all(exc.errors(), prefix=("model",), schema=MODELS[name].options)
    config.model = ModelConfig(name=name, **options.model_dump(mode="json"))
    return []


# --------------------------------------------------------------------------- messages


def _suggest(word: str, candidates: list[str], prefix: str) -> str:
    hint = did_you_mean(word, candidates, prefix)
    return f"; {hint}" if hint else ""


def _describe_all(errors: list[dict], prefix: tuple = (), schema: type[BaseModel] = Config) -> list[str]:
    """One line per key: a value that fits none of a key's forms (a list or a number, ...) is one problem, not one per form."""
    lines: dict[str, list[str]] = {}
    for error in errors:
        line = _describe(error, prefix, schema)
        key, _, message = line.partition(": ")
        lines.setdefault(_without_type_tags(key), []).append(message)
    return [f"{key}: {messages[0]}" if len(messages) == 1 else f"{key}: " + _either(messages) for key, messages in lines.items()]


def _without_type_tags(key: str) -> str:
    """model.dropout.list[float] -> model.dropout: pydantic names each form of a union in the location."""
    return ".".join(part for part in key.split(".") if not re.match(r"^(list|dict|tuple|literal|float|int|str|bool|"
                                                                    r"constrained-\w+|function-\w+|lax-\w+)(\[.*\])?$", part))


def _either(messages: list[str]) -> str:
    """'Input should be a valid list (got x)' and 'Input should be a valid number (got x)' -> one sentence."""
    got = re.search(r" \(got .*\)$", messages[0])
    wants = [re.sub(r" \(got .*\)$", "", m).removeprefix("Input should be ") for m in messages]
    return "should be " + " or ".join(dict.fromkeys(wants)) + (got.group(0) if got else "")


def _describe(error: dict, prefix: tuple = (), schema: type[BaseModel] = Config) -> str:
    """One line for one pydantic error: key path, what is wrong, what is allowed."""
    loc, owner = _clean_loc(prefix + tuple(error["loc"]), schema, len(prefix))
    path = ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        parent = ".".join(str(p) for p in loc[:-1])
        fields = list(owner.model_fields) if owner else []
        if not parent:  # a section's key written at the top level: `labels: csv` for `data: {labels: csv}`
            homes = [f"{section}.{loc[-1]}" for section, field in Config.model_fields.items()
                     if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
                     and loc[-1] in field.annotation.model_fields]
            if homes:
                return f"{path}: unknown key; did you mean {homes[0]}? (a key of the {homes[0].split('.')[0]} section)"
        return f"{path}: unknown key{_suggest(str(loc[-1]), fields, parent + '.' if parent else '')}" + (
            f" (valid keys: {', '.join(fields)})" if fields else ""
        )
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    if error["type"] == "union_tag_invalid":
        return f"{path}: unknown schedule {error['input'].get('name')!r}; allowed: {', '.join(SCHEDULE_NAMES)}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "path_type":
        message = "should be a path (a string)"  # pydantic says "for <class 'pathlib.Path'>"
    if "input" in error and not isinstance(error["input"], dict):
        return f"{path}: {message} (got {_excerpt(repr(error['input']))})"
    return f"{path}: {message}"


def _clean_loc(loc: tuple, schema: type[BaseModel], skip: int) -> tuple[tuple, type[BaseModel] | None]:
    """Drop pydantic's union tags from an error location and find the section that owns the last key."""
    clean, owner = list(loc[:skip]), schema
    model: type[BaseModel] | None = schema
    for part in loc[skip:]:
        if isinstance(part, str) and part in SCHEDULE_NAMES and clean and clean[-1] == "schedule":
            model = {"exponential_decay": ExponentialDecay, "cosine_decay": CosineDecay,
                     "piecewise_constant": PiecewiseConstant, "none": NoSchedule}[part]
            continue
        clean.append(part)
        owner = model
        field = model.model_fields.get(part) if model and isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return tuple(clean), owner


# --------------------------------------------------------------------------- checks across keys


def _check_combinations(config: Config) -> list[str]:
    """Problems no single key can see; each message says how to fix it."""
    return (_source_problems(config) + _label_problems(config) + _optimizer_problems(config) + _split_problems(config)
            + _monitor_problems(config))


def _source_problems(config: Config) -> list[str]:
    """Where the images and their labels come from: a folder or a TFDS name, and each label source's own keys."""
    from imgcls.data.labels import compile_pattern

    data, problems = config.data, []
    if (data.dir is None) == (data.tfds is None):
        problems.append("data.dir: required key is missing (the data folder; or set data.tfds: a TensorFlow Datasets name)"
                        if data.dir is None
                        else "data.tfds: a dataset instead of data.dir; give only one of them")
    needs = {"filename": ["filename_pattern"], "csv": ["labels_file"]}.get(data.labels, [])
    owners = {"filename_pattern": "filename", "labels_file": "csv", "path_column": "csv", "label_column": "csv"}
    for key in needs:
        if getattr(data, key) is None:
            example = {"filename_pattern": "a regex whose group is the label, e.g. '^(\\d+)_'",
                       "labels_file": "the CSV file with a row per image"}[key]
            problems.append(f"data.{key}: needed by data.labels: {data.labels} ({example})")
    for key, owner in owners.items():
        if getattr(data, key) is not None and data.labels != owner:
            problems.append(f"data.{key}: only used with data.labels: {owner} (data.labels is {data.labels})")
    if data.filename_pattern is not None and data.labels == "filename":
        try:
            compile_pattern(data.filename_pattern)
        except ImgclsError as error:
            problems.append(str(error))
    if data.class_names is not None:
        repeated = sorted({name for name in data.class_names if data.class_names.count(name) > 1})
        if data.tfds is not None:
            problems.append("data.class_names: a TFDS dataset names its classes; remove data.class_names")
        elif data.labels == "folders":
            problems.append("data.class_names: only used with data.labels: filename or csv (class folders name their classes)")
        elif repeated:
            problems.append(f"data.class_names: {', '.join(repeated)} given twice; each class once")
        elif len(data.class_names) < 2:
            problems.append("data.class_names: needs at least 2 names")
    if data.tfds is not None:
        if data.labels != "folders":
            problems.append("data.labels: a TFDS dataset has its own labels; remove data.labels")
        problems += [f"data.{key}: not used with data.tfds (it has its own splits; see data.tfds_split)"
                     for key in ("val_dir", "test_dir") if getattr(data, key) is not None]
    elif data.tfds_split is not None:
        problems.append("data.tfds_split: only used with data.tfds")
    if isinstance(data.tfds_split, dict):
        subsets = ["train", "val", "test"]
        problems += [f"data.tfds_split.{key}: unknown subset{_suggest(key, subsets, 'data.tfds_split.')} "
                     f"(the subsets: {', '.join(subsets)})" for key in data.tfds_split if key not in subsets]
        if "train" not in data.tfds_split:
            problems.append("data.tfds_split: name the training split, e.g. {train: 'train[:80%]', val: 'train[80%:]'}")
    return problems


def _label_problems(config: Config) -> list[str]:
    """The loss, label smoothing, metrics and augmentation against data.label_mode."""
    problems = []
    data, train = config.data, config.train
    needed = LOSS_FOR_LABEL_MODE[data.label_mode]
    if train.loss not in ("auto", needed):
        problems.append(
            f"train.loss: {train.loss} does not match data.label_mode {data.label_mode}, which needs {needed}; "
            f"set train.loss: auto (or {needed}), or change data.label_mode"
        )
    if train.label_smoothing and data.label_mode == "int":
        problems.append("train.label_smoothing: needs one-hot labels; set data.label_mode: categorical (loss auto follows)")
    one_hot_only = [m for m in train.metrics if m in ("auc", "precision", "recall")]
    if one_hot_only and data.label_mode == "int":
        problems.append(
            f"train.metrics: {', '.join(one_hot_only)} need one-hot or binary labels; set data.label_mode: categorical or binary"
        )
    if data.augment == "strong" and data.label_mode != "categorical":
        problems.append(
            "data.augment: strong mixes images and their labels (MixUp/CutMix), which needs one-hot labels; "
            "set data.label_mode: categorical, or use data.augment: light"
        )
    return problems


def _optimizer_problems(config: Config) -> list[str]:
    """Momentum, Nesterov, a plateau callback against a schedule, and fine-tuning against the model."""
    problems = []
    train = config.train
    if train.optimizer not in ("sgd", "rmsprop") and train.momentum is not None:
        problems.append(f"train.momentum: {train.optimizer} has no momentum; remove it or use optimizer sgd or rmsprop")
    if train.optimizer != "sgd" and train.nesterov:
        problems.append(f"train.nesterov: only sgd has Nesterov momentum (optimizer is {train.optimizer})")
    if config.callbacks.reduce_lr_on_plateau.enabled and train.schedule.name != "none":
        problems.append(
            "callbacks.reduce_lr_on_plateau: cannot lower a scheduled learning rate; "
            "set train.schedule: none or disable reduce_lr_on_plateau"
        )
    if train.fine_tune is not None:
        weights = config.model.options.get("weights", "imagenet")
        if config.model.name != "backbone":
            problems.append(f"train.fine_tune: needs model.name: backbone (a pretrained backbone to freeze), not {config.model.name}")
        elif weights == "none":
            problems.append("train.fine_tune: a backbone with model.weights: none has nothing to keep frozen; "
                            "use imagenet or a weights file, or remove train.fine_tune")
    return problems


def _split_problems(config: Config) -> list[str]:
    """Validation and test subsets: a folder or a fraction, never both, and something left to train on."""
    problems = []
    data = config.data
    if data.val_dir is not None and data.validation_split is not None:
        problems.append(
            "data.validation_split: not used when data.val_dir is set; remove one of them (or --set data.validation_split=null)"
        )
    if data.test_dir is not None and data.test_split:
        problems.append("data.test_split: not used when data.test_dir is set; remove one of them")
    held_out = (data.validation_split or 0) + data.test_split
    if held_out >= 1:
        problems.append(f"data.validation_split + data.test_split: {held_out:g} leaves nothing to train on; keep the sum under 1")
    return problems


def _monitor_problems(config: Config) -> list[str]:
    """Every monitored metric must be one the run records."""
    monitors = {
        "callbacks.checkpoint.monitor": config.callbacks.checkpoint.monitor,
        "callbacks.early_stopping.monitor": config.callbacks.early_stopping.monitor,
        "callbacks.reduce_lr_on_plateau.monitor": config.callbacks.reduce_lr_on_plateau.monitor,
    }
    known = config.metric_names()
    return [f"{key}: unknown metric {monitor!r}{_suggest(monitor, known, '')}; known: {', '.join(known)}"
            for key, monitor in monitors.items() if monitor not in known]
