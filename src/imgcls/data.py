"""Data: scanned folders, the seeded split, duplicates, the cache choice, and the tf.data pipeline.

    data/<class_name>/**/<image>      classes are the sub-folder names, sorted

The flow is: `plan_data` (scan every folder with imgcls.scan, split once with a
seed so train, val and test never overlap, leave out files duplicated across
subsets, choose the cache) -> `make_datasets`, which decodes each file once
with `load_image`, caches the resized pixels as uint8, reshuffles every image
every epoch, batches and prefetches.

`load_image` is *the* preprocessing: `imgcls predict` calls the same function,
so a model never sees pixels prepared differently from training. Rescaling to
[0, 1] lives inside the model, so the model takes raw 0-255 pixels. It only
ever reads files that the scan has checked, or converted for it.

TensorFlow is imported inside the functions that need it, so scanning, splitting
and planning stay usable (and testable) without paying for it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgcls.errors import ImgclsError
from imgcls.runtime import import_tensorflow
from imgcls.scan import FolderScan, cache_folder, scan_folder

if TYPE_CHECKING:
    import tensorflow as tf

    from imgcls.config import Config

SUBSETS = ("train", "val", "test")
MEMORY_CACHE_SHARE = 0.25  # data.cache auto keeps images in memory up to a quarter of RAM, else on disk


def list_images(root: Path, class_names: list[str] | None = None) -> FolderScan:
    """The usable images of `root/<class>/**`; `class_names` forces the classes (e.g. a validation folder)."""
    return scan_folder(root, class_names)


# --------------------------------------------------------------------------- splitting


def split_stratified(labels: np.ndarray, fraction: float, seed: int,
                     test_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, validation, test): each class gives its share to each held-out subset.

    A class with two or more images keeps at least one in validation, one with
    three or more at least one in test (when asked for), and train always keeps
    at least one. Seeded, so the same labels and seed always give the same
    split, and the index sets are disjoint by construction. Pass all-equal
    labels for a plain random split.
    """
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        n = len(members)
        n_val, n_test = int(round(n * fraction)), int(round(n * test_fraction))
        if n >= 2 and fraction > 0:
            n_val = max(n_val, 1)
        if n >= 3 and test_fraction > 0:
            n_test = max(n_test, 1)
        excess = max(0, n_val + n_test - max(n - 1, 0))  # train keeps one: take it from test first
        cut = min(excess, n_test)
        n_test, n_val = n_test - cut, n_val - (excess - cut)
        val.append(members[:n_val])
        test.append(members[n_val:n_val + n_test])
        train.append(members[n_val + n_test:])
    empty = [np.zeros(0, np.int64)]
    return tuple(np.sort(np.concatenate(part + empty)).astype(np.int64) for part in (train, val, test))


@dataclass
class Subset:
    """The images of train, val or test: original paths, what TF reads, labels and content hashes."""

    root: Path  # the folder split.csv paths are relative to
    files: list[str]
    readable: list[str]
    labels: np.ndarray
    hashes: list[str]

    @classmethod
    def of(cls, scan: FolderScan) -> Subset:
        return cls(scan.root, scan.files, scan.readable, scan.labels, [c.sha1 for c in scan.checks])

    def take(self, indices) -> Subset:
        indices = list(indices)
        return Subset(self.root, [self.files[i] for i in indices], [self.readable[i] for i in indices],
                      self.labels[indices] if indices else self.labels[:0], [self.hashes[i] for i in indices])

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class Duplicate:
    """A file byte-identical to one in an earlier subset (train before val before test)."""

    subset: str
    path: str
    same_as: str  # the earlier copy
    same_as_subset: str
    dropped: bool  # left out of its subset (data.dedupe: train_only)


def find_duplicates(subsets: dict[str, Subset], drop: bool) -> list[Duplicate]:
    """Files whose bytes already appear in an earlier subset; with `drop`, they leave their (later) subset."""
    first: dict[str, tuple[str, str]] = {}
    duplicates = []
    for name in SUBSETS:
        part = subsets.get(name)
        if part is None:
            continue
        keep = []
        for i, digest in enumerate(part.hashes):
            earlier = first.get(digest)
            if earlier is not None and earlier[0] != name:
                duplicates.append(Duplicate(name, part.files[i], earlier[1], earlier[0], dropped=drop))
                if drop:
                    continue
            first.setdefault(digest, (name, part.files[i]))
            keep.append(i)
        if len(keep) < len(part):
            subsets[name] = part.take(keep)
    return duplicates


# --------------------------------------------------------------------------- cache


@dataclass
class CachePlan:
    """Where decoded images are kept after the first epoch, and why."""

    mode: str  # memory | disk | none
    requested: str  # the data.cache setting
    estimate_bytes: int  # uint8 images: count x height x width x channels
    limit_bytes: int  # auto's memory limit
    images: int
    folder: Path | None = None  # disk: where the cache files go

    def __str__(self) -> str:
        why = ""
        if self.requested == "auto":
            side = "under" if self.mode == "memory" else "over"
            why = f", {side} the memory limit of {human_bytes(self.limit_bytes)}, a quarter of RAM"
        where = f" in {self.folder}" if self.mode == "disk" else ""
        return (f"cache: {self.mode}{where} (data.cache {self.requested}; {self.images:,} images need about "
                f"{human_bytes(self.estimate_bytes)} as uint8{why})")


def choose_cache(requested: str, images: int, image_size: tuple[int, int], channels: int, folder: Path) -> CachePlan:
    estimate = images * image_size[0] * image_size[1] * channels
    limit = int(total_memory() * MEMORY_CACHE_SHARE)
    mode = requested if requested != "auto" else ("memory" if estimate <= limit else "disk")
    return CachePlan(mode, requested, estimate, limit, images, folder / "tfdata" if mode == "disk" else None)


def total_memory() -> int:
    """Physical memory in bytes, or the container's limit when that is lower (8 GiB when unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 8 << 30
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# --------------------------------------------------------------------------- the plan


@dataclass
class DataPlan:
    """Everything decided about the data before TensorFlow starts: what a run trains, validates and tests on."""

    data_dir: Path
    class_names: list[str]
    subsets: dict[str, Subset]  # train, val and, when asked for, test
    scans: list[FolderScan]  # data.dir first, then val_dir and test_dir when set
    duplicates: list[Duplicate] = field(default_factory=list)
    cache: CachePlan | None = None
    class_weight: dict[int, float] | None = None  # for Keras' fit(class_weight=...)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, list[int]]:
        """Images per class, per subset."""
        return {name: np.bincount(part.labels, minlength=self.num_classes).tolist() for name, part in self.subsets.items()}

    def relative(self, path: str | Path, root: Path | None = None) -> str:
        """`path` relative to `root` (default: the data folder), or as it is when it is elsewhere."""
        try:
            return Path(path).relative_to(root or self.data_dir).as_posix()
        except ValueError:
            return Path(path).as_posix()

    def bad_files(self) -> list[tuple[str, str]]:
        """(path relative to the data folder, reason) of every bad file of every scanned folder."""
        return [(self.relative(scan.root / rel), reason) for scan in self.scans for rel, reason in scan.bad]

    def split_rows(self) -> list[dict[str, str]]:
        """split.csv: path (relative to its folder), class, subset."""
        return [{"path": self.relative(f, part.root), "class": self.class_names[label], "subset": name}
                for name, part in self.subsets.items() for f, label in zip(part.files, part.labels)]


def plan_data(config: Config) -> DataPlan:
    """Scan, split and de-duplicate the data that `config.data` describes; no TensorFlow needed."""
    data = config.data
    main = scan_folder(data.dir, on_bad_image=data.on_bad_image, allow_empty_classes=data.allow_empty_classes)
    if data.label_mode == "binary" and len(main.class_names) != 2:
        raise ImgclsError(
            f"data.label_mode: binary needs exactly 2 classes, {data.dir} has {len(main.class_names)}; "
            "use label_mode int or categorical"
        )
    scans, subsets = [main], {}
    for name, folder in (("val", data.val_dir), ("test", data.test_dir)):
        if folder is not None:
            scan = scan_folder(folder, class_names=main.class_names, on_bad_image=data.on_bad_image,
                               ignore_classes=main.dropped_classes, key=f"data.{name}_dir")
            scans.append(scan)
            subsets[name] = Subset.of(scan)

    everything = Subset.of(main)
    val_share = 0.0 if data.val_dir is not None else data.validation_split
    labels = everything.labels if data.split.stratify else np.zeros_like(everything.labels)
    train_idx, val_idx, test_idx = split_stratified(labels, val_share, data.seed, test_fraction=data.test_split)
    subsets["train"] = everything.take(train_idx)
    subsets.setdefault("val", everything.take(val_idx))
    if data.test_split:
        subsets["test"] = everything.take(test_idx)
    if not len(subsets["val"]):
        raise ImgclsError(f"data.validation_split: {data.validation_split} of {len(everything)} images "
                          "leaves no validation image; raise it")
    subsets = {name: subsets[name] for name in SUBSETS if name in subsets}
    duplicates = find_duplicates(subsets, drop=data.dedupe == "train_only")
    if not len(subsets["val"]):
        raise ImgclsError("every validation image is a copy of a training image; remove the copies, "
                          "or set data.dedupe: off to keep them")
    cached = len(subsets["train"]) + len(subsets["val"])
    cache = choose_cache(data.cache, cached, data.image_size, config.channels, cache_folder(Path(data.dir)))
    weights = class_weights(config.train.class_weight, main.class_names, subsets["train"].labels)
    return DataPlan(Path(data.dir), main.class_names, subsets, scans, duplicates, cache, weights)


def class_weights(setting: str | dict[str, float] | None, class_names: list[str], labels: np.ndarray) -> dict[int, float] | None:
    """train.class_weight as Keras wants it: {class index: weight}; balanced = n_images / (n_classes x count)."""
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(labels, minlength=len(class_names))
        return {i: round(len(labels) / (len(class_names) * n), 6) if n else 1.0 for i, n in enumerate(counts)}
    unknown = sorted(set(setting) - set(class_names))
    if unknown:
        raise ImgclsError(f"train.class_weight: unknown class(es) {unknown}; the classes are {class_names}")
    return {i: float(setting.get(name, 1.0)) for i, name in enumerate(class_names)}


# --------------------------------------------------------------------------- tf.data


def load_image(path: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """Read, decode and resize one image file to uint8 [h, w, channels].

    The one preprocessing function: training and `imgcls predict` both use it.
    """
    tf = import_tensorflow()

    return decode_image(tf.io.read_file(path), image_size, channels)


def decode_image(contents: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """`load_image` after the file is read: encoded bytes to uint8 [h, w, channels].

    Separate so an exported SavedModel can take encoded JPEG/PNG bytes and
    prepare them exactly as training did.
    """
    tf = import_tensorflow()

    image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
    image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def images_dataset(files: list[str], image_size: tuple[int, int], channels: int) -> tf.data.Dataset:
    """Decoded uint8 images of `files`, in order, decoded in parallel."""
    tf = import_tensorflow()

    return tf.data.Dataset.from_tensor_slices(files).map(
        lambda path: load_image(path, image_size, channels), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).with_options(_without_autotune_thread(tf))


def _encode_labels(labels: np.ndarray, label_mode: str, num_classes: int):
    if label_mode == "categorical":
        return np.eye(num_classes, dtype=np.float32)[labels]
    if label_mode == "binary":
        return labels.astype(np.float32)[:, None]
    return labels.astype(np.int32)


def make_dataset(files: list[str], labels: np.ndarray, config: Config, num_classes: int, training: bool,
                 cache: str = "memory", first_epoch: int = 0, batch_size: int | None = None) -> tf.data.Dataset:
    """Batches of (uint8 0-255 images, labels in the form `label_mode` asks for).

    `files` are what TF reads (the scan's `readable` paths). `cache` is
    "memory", "none" or a file name prefix for a disk cache. Order matters:
    cache the decoded uint8 images (a quarter of float32's memory), *then*
    shuffle single images (a new order of images, not just of batches, every
    epoch), then batch, augment (training only, `data.augment`) and prefetch. Batches stay uint8: the model casts them
    inside the train step, so the batches prefetch buffers are small too
    (casting here made AUTOTUNE buffer float32 copies: +1 GB at 224x224).

    A training dataset holds epochs `first_epoch` .. `train.epochs - 1` back to
    back (fit it with steps_per_epoch), each shuffled with a seed derived from
    the epoch number: a resumed run sees exactly the order an uninterrupted
    run would have seen, which TF's own reshuffling (a counter inside the
    process) cannot give. `batch_size` is the global batch (default
    data.batch_size); a distribution strategy splits it among the replicas.
    """
    tf = import_tensorflow()

    from imgcls.augment import make_augmenter

    data = config.data
    batch_size = batch_size or data.batch_size
    images = images_dataset(files, data.image_size, config.channels)
    ds = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(_encode_labels(labels, data.label_mode, num_classes)))
    if cache == "memory":
        ds = ds.cache()
    elif cache != "none":
        # A run stopped while filling the cache leaves a lock file that would make TF refuse to start.
        for pattern in ("_*.lockfile", "_*.tempstate*"):
            for stale in Path(cache).parent.glob(Path(cache).name + pattern):
                stale.unlink(missing_ok=True)
        ds = ds.cache(cache)
    if training:
        buffer, seed = data.shuffle_buffer or len(files), config.runtime.seed
        one_pass = ds
        ds = tf.data.Dataset.range(first_epoch, config.total_epochs).flat_map(
            lambda epoch: one_pass.shuffle(buffer, seed=seed + epoch * 7919, reshuffle_each_iteration=False)
            .batch(batch_size))
    else:
        ds = ds.batch(batch_size)
    augment = make_augmenter(config) if training else None
    if augment is not None:  # training batches only, after the cache: new variants every epoch
        ds = ds.map(lambda x, y: augment(tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_without_autotune_thread(tf))


def _without_autotune_thread(tf):
    """tf.data options without the autotuning model's background thread.

    Its optimisation loop sleeps for up to a minute between passes and is not
    woken when an iterator is deleted mid-stream, which is how `fit` with
    steps_per_epoch leaves the training iterator: the last epoch was followed
    by 15-42 s of idle waiting (TF 2.21, measured), and `imgcls predict` on 500
    images waited about 4.5 s at the end of one call in two. Options reach
    every dataset built on this one, but not through `flat_map`, so
    `make_dataset` sets them again on its result. Parallel maps still use one
    call per CPU core and prefetch still grows its buffer as needed.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _disk_cache_name(plan: DataPlan, subset: str, config: Config) -> str:
    """A cache file per subset and content: a changed image, size or colour mode never reads a stale cache."""
    part = plan.subsets[subset]
    key = hashlib.sha1("\n".join([str(config.data.image_size), str(config.channels), *part.readable, *part.hashes])
                       .encode()).hexdigest()[:16]
    plan.cache.folder.mkdir(parents=True, exist_ok=True)
    return str(plan.cache.folder / f"{subset}-{key}")


@dataclass
class Datasets:
    train: tf.data.Dataset
    val: tf.data.Dataset
    class_names: list[str]
    train_files: list[str]
    val_files: list[str]
    train_labels: np.ndarray
    val_labels: np.ndarray
    test: tf.data.Dataset | None = None  # held out: never seen by training or checkpoint selection
    test_files: list[str] = field(default_factory=list)
    test_labels: np.ndarray | None = None
    plan: DataPlan | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def make_datasets(plan: DataPlan, config: Config, first_epoch: int = 0, replicas: int = 1) -> Datasets:
    """The tf.data pipelines of a plan: train and val cached as `plan.cache` says, test never cached.

    `train` holds the epochs from `first_epoch` (0-based) to the last; see
    `make_dataset`. Batches are global: data.batch_size x `replicas`.
    """
    n = plan.num_classes

    def build(subset: str, training: bool) -> tf.data.Dataset:
        part = plan.subsets[subset]
        cache = plan.cache.mode if subset != "test" else "none"
        if cache == "disk":
            cache = _disk_cache_name(plan, subset, config)
        return make_dataset(part.readable, part.labels, config, n, training=training, cache=cache, first_epoch=first_epoch,
                            batch_size=config.data.batch_size * replicas)

    train, val, test = plan.subsets["train"], plan.subsets["val"], plan.subsets.get("test")
    return Datasets(
        train=build("train", training=True),
        val=build("val", training=False),
        class_names=plan.class_names,
        train_files=train.files,
        val_files=val.files,
        train_labels=train.labels,
        val_labels=val.labels,
        test=build("test", training=False) if test is not None and len(test) else None,
        test_files=test.files if test is not None else [],
        test_labels=test.labels if test is not None else None,
        plan=plan,
    )


def load_datasets(config: Config) -> Datasets:
    """Scan, split and wrap the data that `config.data` describes."""
    return make_datasets(plan_data(config), config)
