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

from imgcls.data.folders import FolderScan, class_folders, describe_bad, scan_folder
from imgcls.data.labels import LabelSource
from imgcls.data.trio import find_trio
from imgcls.data.scan_cache import cache_folder
from imgcls.errors import ImgclsError

if TYPE_CHECKING:
    from imgcls.config import Config

SUBSETS = ("train", "val", "test")
MEMORY_CACHE_SHARE = 0.25  # data.cache auto keeps images in memory up to a quarter of RAM, else on disk


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
    def of(cls, scan: FolderScan, root: Path | None = None) -> Subset:
        return cls(root or scan.root, scan.files, scan.readable, scan.labels, [c.sha1 for c in scan.checks])

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
    scans: list[FolderScan]  # the training folder first, then the validation and test folders
    duplicates: list[Duplicate] = field(default_factory=list)
    cache: CachePlan | None = None
    class_weight: dict[int, float] | None = None  # for Keras' fit(class_weight=...)
    notes: list[str] = field(default_factory=list)  # how the data was found: a split folder, a TFDS dataset
    origin: dict | None = None  # a TFDS dataset's name, version and splits, recorded in the run

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, list[int]]:
        """Images per class, per subset."""
        return {name: np.bincount(part.labels, minlength=self.num_classes).tolist() for name, part in self.subsets.items()}

    def relative(self, path: str | Path, root: Path | None = None) -> str:
        """`path` relative to `root` (default: the data folder), or as it is when it is elsewhere."""
        root = root or self.data_dir
        for inside, folder in ((Path(path), root), (Path(path).resolve(), Path(root).resolve())):
            try:
                return inside.relative_to(folder).as_posix()
            except ValueError:
                pass
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
    source = LabelSource.of(data)
    found = find_data(config, source)
    main = scan_folder(found.folders["train"], on_bad_image=data.on_bad_image, allow_empty_classes=data.allow_empty_classes,
                       key=found.keys["train"], source=source)
    if data.label_mode == "binary" and len(main.class_names) != 2:
        raise ImgclsError(
            f"data.label_mode: binary needs exactly 2 classes, {found.root} has {len(main.class_names)}; "
            "use label_mode int or categorical"
        )
    scans, subsets = [main], {}
    for name in ("val", "test"):
        folder = found.folders.get(name)
        if folder is not None:
            scan = scan_folder(folder, class_names=main.class_names, on_bad_image=data.on_bad_image,
                               ignore_classes=main.dropped_classes, key=found.keys[name], source=source)
            scans.append(scan)
            subsets[name] = Subset.of(scan, found.split_root(name))
    if source.kind == "csv":
        _report_unused_rows(main, source, data.on_bad_image)

    everything = Subset.of(main, found.split_root("train"))
    val_share = 0.0 if "val" in subsets else data.validation_split
    test_share = 0.0 if "test" in subsets else data.test_split
    labels = everything.labels if data.split.stratify else np.zeros_like(everything.labels)
    train_idx, val_idx, test_idx = split_stratified(labels, val_share, data.seed, test_fraction=test_share)
    subsets["train"] = everything.take(train_idx)
    subsets.setdefault("val", everything.take(val_idx))
    if test_share:
        subsets["test"] = everything.take(test_idx)
    if not len(subsets["val"]):
        if everything.labels.size and np.bincount(everything.labels).max() < 2:
            raise ImgclsError(f"{main.root}: every class has a single image, which leaves none to validate on; a "
                              "classifier needs at least 2 images in a class (more, to learn anything)")
        raise ImgclsError(f"data.validation_split: {data.validation_split} of {len(everything)} images "
                          "leaves no validation image; raise it")
    subsets = {name: subsets[name] for name in SUBSETS if name in subsets}
    duplicates = find_duplicates(subsets, drop=data.dedupe == "train_only")
    if not len(subsets["val"]):
        raise ImgclsError("every validation image is a copy of a training image; remove the copies, "
                          "or set data.dedupe: off to keep them")
    cached = len(subsets["train"]) + len(subsets["val"])
    cache = choose_cache(data.cache, cached, data.image_size, config.channels, cache_folder(found.root))
    weights = class_weights(config.train.class_weight, main.class_names, subsets["train"].labels)
    return DataPlan(found.root, main.class_names, subsets, scans, duplicates, cache, weights, found.notes, found.origin)


@dataclass
class FoundData:
    """Where a config's images are: the data folder, and the folder of each subset it gives (train at least)."""

    root: Path
    folders: dict[str, Path]
    keys: dict[str, str]  # the setting each folder came from, for messages
    in_root: set[str] = field(default_factory=set)  # subsets that are folders of root (a trio, TFDS)
    notes: list[str] = field(default_factory=list)
    origin: dict | None = None

    def split_root(self, subset: str) -> Path:
        """The folder split.csv's paths of `subset` are relative to (as `run.layout.subset_root` reads them)."""
        return self.root if subset in self.in_root else self.folders[subset]


def find_data(config: Config, source: LabelSource) -> FoundData:
    """data.dir as it is (with data.val_dir / test_dir), data.dir split into train/ val/ test/, or a TFDS dataset."""
    data = config.data
    if data.tfds is not None:
        from imgcls.data.tfds import materialize

        dataset = materialize(data.tfds, data.tfds_split, config.runtime.device)
        keys = {subset: f"data.tfds {data.tfds} ({split})" for subset, split in dataset.splits.items()}
        return FoundData(dataset.root, dataset.folders, keys, set(dataset.folders), [dataset.describe()], dataset.origin())
    root = Path(data.dir)
    trio = find_trio(root, source)
    if trio is None:
        folders = {"train": root, "val": data.val_dir, "test": data.test_dir}
        keys = {"train": "data.dir", "val": "data.val_dir", "test": "data.test_dir"}
        return FoundData(root, {k: Path(v) for k, v in folders.items() if v is not None}, keys)
    in_root = set(trio.folders)
    for subset in ("val", "test"):
        folder = getattr(data, f"{subset}_dir")
        if folder is not None and subset in trio.folders:
            raise ImgclsError(f"data.{subset}_dir: {root} has its own {trio.folders[subset].name}/ folder; remove "
                              f"data.{subset}_dir, or point data.dir at {trio.folders['train']}")
        if folder is not None:
            trio.folders[subset] = Path(folder)
    notes = [trio.describe()]
    if "val" in trio.folders and "validation_split" in data.model_fields_set and data.validation_split:
        notes.append(f"data.validation_split is not used: {trio.folders['val'].name}/ is the validation set")
    if "test" in trio.folders and data.test_split:
        notes.append(f"data.test_split is not used: {trio.folders['test'].name}/ is the test set")
    keys = {subset: f"data.dir ({folder.name}/)" for subset, folder in trio.folders.items()}
    keys.update({subset: f"data.{subset}_dir" for subset in ("val", "test") if getattr(data, f"{subset}_dir") is not None})
    return FoundData(root, trio.folders, keys, in_root, notes)


def count_classes(config: Config) -> int | None:
    """How many classes the data gives (for `imgcls summary`), or None when the data is not there."""
    data = config.data
    if data.class_names:
        return len(data.class_names)
    if data.tfds is not None:
        from imgcls.data.tfds import class_names

        names = class_names(data.tfds)
        return len(names) if names else None
    if not Path(data.dir).is_dir():
        return None
    source = LabelSource.of(data)
    trio = find_trio(Path(data.dir), source)
    folder = trio.folders["train"] if trio else Path(data.dir)
    if source.from_folders:
        return len(class_folders(folder))
    return len(scan_folder(folder, source=source).class_names)


def _report_unused_rows(main: FolderScan, source: LabelSource, on_bad_image: str) -> None:
    """Rows of the labels file that named no image of any subset folder: bad entries, like a broken image."""
    unused = source.table.unused()
    main.bad += unused
    if unused and on_bad_image == "error":
        raise ImgclsError(f"{source.labels_file}: {len(unused)} row(s) name no image: {describe_bad(unused)}; fix or "
                          "remove them, or set data.on_bad_image: skip to leave them out")


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
