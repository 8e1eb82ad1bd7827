"""The data plan: what a run trains, validates and tests on, decided before TensorFlow starts.

    plan_data(config)    scan every folder (imgcls.data.folders), split once with a seed so train,
                         val and test never overlap, leave out files duplicated across subsets,
                         weigh the classes and choose the cache -> DataPlan

No TensorFlow here: data problems show at once. `imgcls.data.pipeline` turns
a plan into tf.data datasets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgcls.data.folders import FolderScan, scan_folder
from imgcls.data.scan_cache import cache_folder
from imgcls.errors import ImgclsError

if TYPE_CHECKING:
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
        if everything.labels.size and np.bincount(everything.labels).max() < 2:
            raise ImgclsError(f"{data.dir}: every class has a single image, which leaves none to validate on; a "
                              "classifier needs at least 2 images in a class (more, to learn anything)")
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
