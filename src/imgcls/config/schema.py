"""The config schema: every key of the YAML, its type, default and meaning.

This module is the reference documentation of the YAML: `imgcls config
--defaults` prints it as a commented file (docs/config.md is that output).
Only `data.dir` (or `data.tfds`) is required. Loading and the checks that span keys are in
`imgcls.config.load`. No TensorFlow is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from imgcls.config.schedules import NoSchedule, Schedule, Section



# --------------------------------------------------------------------------- data


class SplitConfig(Section):
    stratify: bool = Field(True, description="every class keeps its share in validation and test (at least one image each)")


class DataConfig(Section):
    dir: Path | None = Field(None, json_schema_extra={"reference": "<required>"},
                             description="the data folder (required unless data.tfds): one sub-folder of images "
                             "per class, or train/ [val/] [test/] folders, or images labelled by data.labels")
    labels: Literal["folders", "filename", "csv"] = Field(
        "folders", description="where each image's class comes from: folders (its class sub-folder) | filename "
        "(data.filename_pattern) | csv (data.labels_file)"
    )
    filename_pattern: str | None = Field(
        None, description="labels: filename: a regex searched in each file name; its group is the label, e.g. '^(\\d+)_' "
        "for 3_127.jpg"
    )
    labels_file: Path | None = Field(None, description="labels: csv: a CSV file with a row per image (path or id, label)")
    path_column: str | None = Field(None, description="labels: csv: the column naming each image, by path or by id "
                                    "without extension (default: the first)")
    label_column: str | list[str] | None = Field(
        None, description="labels: csv: the label column (default: the second), or a list of 0/1 columns, one per class"
    )
    class_names: list[str] | None = Field(
        None, description="labels: filename or csv: the classes in order; a numeric label is an index into it "
        "(default: the labels found, numeric or alphabetical)"
    )
    tfds: str | None = Field(None, description="instead of data.dir: a TensorFlow Datasets name, e.g. tf_flowers or "
                             "eurosat/rgb (pip install 'imgcls[tfds]'; downloaded once into the user cache)")
    tfds_split: str | dict[str, str] | None = Field(
        None, description="data.tfds' splits: the training split (e.g. train[:80%]), or {train: ..., val: ..., test: ...}; "
        "default: train, plus the dataset's validation and test splits when it has them"
    )
    val_dir: Path | None = Field(None, description="separate validation folder; when set, validation_split is not used")
    validation_split: float | None = Field(
        0.2, gt=0, lt=1, description="fraction of images held out for validation (null when val_dir is set)"
    )
    test_dir: Path | None = Field(None, description="separate test folder (same classes), held out from training and checkpoint selection")
    test_split: float = Field(0.0, ge=0, lt=1, description="or this fraction of data.dir held out as the test set; 0 = no test set")
    split: SplitConfig = Field(default_factory=SplitConfig, description="how validation and test images are drawn from data.dir")
    seed: int = Field(123, description="seed of the train/validation/test split: same seed, same split")
    image_size: tuple[int, int] = Field((224, 224), description="[height, width] every image is resized to")
    batch_size: int = Field(32, ge=1, description="images per training step and replica (one replica unless runtime.distribute)")
    label_mode: Literal["int", "categorical", "binary"] = Field(
        "int", description="int (sparse labels) | categorical (one-hot) | binary (exactly 2 classes, one sigmoid output)"
    )
    color_mode: Literal["rgb", "grayscale"] = Field("rgb", description="rgb (3 channels) | grayscale (1 channel)")
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto", description="keep decoded, resized uint8 images after the first epoch: auto (memory up to a quarter "
        "of RAM, else disk) | memory | disk (in the data folder's .imgcls_cache/) | none (true = memory, false = none)"
    )
    on_bad_image: Literal["skip", "error"] = Field(
        "skip", description="a broken, truncated or oversized image: skip it (named, listed in skipped_files.txt) | error"
    )
    allow_empty_classes: bool = Field(False, description="drop a class folder without usable images (with a warning) instead of failing")
    dedupe: Literal["train_only", "off"] = Field(
        "train_only", description="byte-identical files in train and val/test: keep only the train copy | off (report only)"
    )
    shuffle_buffer: int | None = Field(
        None, ge=1, description="images in the shuffle buffer; null = the whole training set (a full reshuffle every epoch)"
    )
    augment: Literal["none", "light", "strong"] = Field(
        "none", description="training images only, in tf.data: none | light (flip, rotation, zoom, translation, contrast, "
        "brightness) | strong (light + RandAugment, MixUp or CutMix, RandomErasing; needs label_mode categorical)"
    )
    augment_flip: Literal["horizontal", "vertical", "horizontal_and_vertical", "none"] = Field(
        "horizontal", description="the flip light and strong use; none for images whose mirror is another class (digits, text)"
    )

    @model_validator(mode="after")
    def _split_or_val_dir(self) -> DataConfig:
        if self.val_dir is not None and "validation_split" not in self.model_fields_set:
            self.validation_split = None  # the default split does not apply to a separate folder
        if self.val_dir is None and self.validation_split is None:
            raise ValueError("validation_split: give a fraction (e.g. 0.2), or set data.val_dir")
        return self

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_from_bool(cls, value: Any) -> Any:
        # Old configs said `cache: true/false`.
        return {True: "memory", False: "none", "true": "memory", "false": "none"}.get(value, value) \
            if isinstance(value, (bool, str)) else value

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) else value

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError("height and width must be at least 8 pixels")
        return value


# --------------------------------------------------------------------------- model


class ModelConfig(Section):
    # The registered builder's own options sit beside `name` (e.g. `filters`);
    # `load_config` validates them against that builder's schema.
    model_config = ConfigDict(extra="allow")

    name: str = Field("simple_cnn", description="a registered model; `imgcls models` lists them (num_classes comes from the data)")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# --------------------------------------------------------------------------- train


LOSS_FOR_LABEL_MODE = {
    "int": "sparse_categorical_crossentropy",
    "categorical": "categorical_crossentropy",
    "binary": "binary_crossentropy",
}


class FineTuneConfig(Section):
    epochs: int = Field(10, ge=1, description="epochs of phase 2, after train.epochs of phase 1 (the head alone, backbone frozen)")
    unfreeze: Literal["all"] | int = Field("all", description="all | N: unfreeze the whole backbone or only its top N layers")
    learning_rate: float = Field(1e-5, gt=0, description="phase 2 learning rate (peak of train.schedule, re-run over the phase 2 epochs)")

    @field_validator("unfreeze")
    @classmethod
    def _positive_layers(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("give all, or a number of layers of at least 1")
        return value


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, description="passes over the training set")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="adam | adamw | sgd | rmsprop")
    learning_rate: float = Field(1e-3, gt=0, description="learning rate, or the starting/peak rate of the schedule")
    schedule: Schedule = Field(
        default_factory=NoSchedule,
        description="none | exponential_decay | cosine_decay | piecewise_constant, with its options (see below)",
    )
    momentum: float | None = Field(None, ge=0, lt=1, description="sgd and rmsprop only; null = optimizer default (sgd 0.9)")
    nesterov: bool = Field(False, description="sgd only: Nesterov momentum")
    weight_decay: float | None = Field(None, ge=0, description="decoupled weight decay; null = optimizer default (adamw 0.004)")
    clipnorm: float | None = Field(None, gt=0, description="clip each gradient to this L2 norm; null = no clipping")
    loss: Literal["auto", "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy"] = Field(
        "auto", description="auto = the loss that matches data.label_mode; imgcls owns the output layer, so never from_logits"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="needs label_mode categorical or binary")
    metrics: list[Literal["accuracy", "top5_accuracy", "auc", "precision", "recall"]] = Field(
        ["accuracy"], description="accuracy | top5_accuracy | auc | precision | recall (loss is always tracked)"
    )
    scale_learning_rate: Literal["none", "linear"] = Field(
        "none", description="with several replicas (runtime.distribute): none | linear (learning rates x replicas, "
        "as the global batch is data.batch_size x replicas)"
    )
    class_weight: Literal["balanced"] | dict[str, float] | None = Field(
        None, description="null | balanced (n_images / (n_classes x class count)) | {class name: weight} (others 1.0)"
    )
    ema: bool = Field(False, description="keep an exponential moving average of the weights; validation, best.keras "
                      "and the final model use the averaged weights")
    ema_momentum: float = Field(0.99, gt=0, lt=1, description="EMA decay per optimizer step (0.99: about the last 100 steps)")
    fine_tune: FineTuneConfig | None = Field(
        None, description="transfer learning in two phases (model.name backbone, pretrained): null = one phase, all "
        "layers train | {epochs, unfreeze, learning_rate}"
    )
    time_limit_minutes: float | None = Field(
        None, gt=0, description="a training-time budget (both phases): the epochs that fit are measured and a cosine "
        "schedule is laid over them, train.epochs becomes the cap; status time_limit"
    )

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_names_as_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "balanced":
            raise ValueError("use balanced, or a mapping of class name to weight, e.g. {cat: 2.0}")
        # YAML reads a class folder named 0 as the number 0.
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("class_weight")
    @classmethod
    def _positive_weights(cls, value: Any) -> Any:
        if isinstance(value, dict) and any(w <= 0 for w in value.values()):
            raise ValueError("every class weight must be greater than 0")
        return value

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_from_name(cls, value: Any) -> Any:
        if value is None:
            return {"name": "none"}
        return {"name": value} if isinstance(value, str) else value


# --------------------------------------------------------------------------- callbacks


class CheckpointConfig(Section):
    monitor: str = Field("val_accuracy", description="metric that decides which epoch is best; best.keras is always kept")
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto = max for accuracy-like metrics, min for losses")


class EarlyStoppingConfig(Section):
    enabled: bool = Field(False, description="stop when the monitored metric stops improving")
    monitor: str = Field("val_accuracy", description="metric to watch")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")
    patience: int = Field(10, ge=1, description="epochs without improvement before stopping")
    restore_best_weights: bool = Field(True, description="end with the best epoch's weights, not the last")


class ReduceLROnPlateauConfig(Section):
    enabled: bool = Field(False, description="lower the learning rate when the monitored metric plateaus (needs schedule: none)")
    monitor: str = Field("val_loss", description="metric to watch")
    factor: float = Field(0.1, gt=0, lt=1, description="multiply the learning rate by this")
    patience: int = Field(5, ge=1, description="epochs without improvement before lowering")
    min_lr: float = Field(0.0, ge=0, description="never go below this")


class CallbacksConfig(Section):
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    reduce_lr_on_plateau: ReduceLROnPlateauConfig = Field(default_factory=ReduceLROnPlateauConfig)
    tensorboard: bool = Field(False, description="write TensorBoard logs to <run>/tensorboard")


# --------------------------------------------------------------------------- evaluate


class EvaluateConfig(Section):
    after_training: bool = Field(
        True, description="evaluate best.keras at the end of training (val, and test when there is one): eval.json and plots"
    )
    top_k: int | None = Field(
        None, ge=1, description="top-k accuracy to report; null = top-5 when there are more than 5 classes, else none"
    )
    misclassified: int = Field(25, ge=0, le=100, description="images in misclassified.png (the most confident mistakes)")


# --------------------------------------------------------------------------- runtime


DEVICES = "auto | cpu | gpu | a GPU index (0, 1, ...)"


def check_device(value: Any) -> str | int:
    """runtime.device's value (and --device's), or ValueError: one message for every wrong one."""
    if value in ("auto", "cpu", "gpu") or (type(value) is int and value >= 0):
        return value
    raise ValueError(f"use {DEVICES}")


class RuntimeConfig(Section):
    device: Literal["auto", "cpu", "gpu"] | int = Field("auto", description=f"{DEVICES} (--device on predict, evaluate, export)")
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "auto", description="auto (mixed_float16 on tensor-core GPUs; on a CPU mixed_bfloat16 only where it was measured "
        "faster, so far AVX512-BF16 CPUs (docs/benchmarks.md); else float32) | float32 | mixed_float16 | mixed_bfloat16; "
        "for training only: the output layer, best.keras and every export compute in float32"
    )
    jit_compile: Literal["auto"] | bool = Field(
        "auto", description="XLA for the train step: auto (on for GPUs, off for CPUs, where it is slower) | true | false"
    )
    threads: int | None = Field(None, ge=1, description="CPU threads per op (intra-op); null = TensorFlow's default, all cores")
    inter_op_threads: int | None = Field(None, ge=1, description="ops run in parallel (inter-op); null = TensorFlow's default "
                                         "(1 saves some memory on a CPU but trained slower: docs/benchmarks.md)")
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = Field(
        "auto", description="auto (MirroredStrategy when more than one GPU is visible, else none) | none | mirrored "
        "(every visible GPU of this machine) | multi_worker (MultiWorkerMirroredStrategy, machines listed in TF_CONFIG); "
        "data.batch_size is per replica: the global batch is data.batch_size x replicas"
    )
    seed: int = Field(42, description="seeds Python, NumPy and TensorFlow (weights, shuffling)")
    deterministic: bool = Field(False, description="TensorFlow op determinism: identical reruns, somewhat slower")

    @field_validator("device", mode="before")
    @classmethod
    def _known_device(cls, value: Any) -> Any:
        return check_device(value)


# --------------------------------------------------------------------------- the whole config


class Config(Section):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @property
    def loss(self) -> str:
        """The loss actually used: `train.loss`, or the one `data.label_mode` needs."""
        return LOSS_FOR_LABEL_MODE[self.data.label_mode] if self.train.loss == "auto" else self.train.loss

    @property
    def channels(self) -> int:
        return 3 if self.data.color_mode == "rgb" else 1

    def metric_names(self, validation: bool = True) -> list[str]:
        """Names that can be monitored: loss, each metric, and their val_ forms."""
        names = ["loss", *self.train.metrics]
        return names + [f"val_{n}" for n in names] if validation else names

    @property
    def total_epochs(self) -> int:
        """Epochs of every phase: train.epochs, plus train.fine_tune.epochs for transfer learning."""
        tune = self.train.fine_tune
        return self.train.epochs + (tune.epochs if tune is not None else 0)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """max for accuracy-like metrics, min for losses (Keras' own 'auto' would pick min for auc)."""
    if mode != "auto":
        return mode
    return "min" if "loss" in monitor else "max"
