"""A folder of classes: data/<class>/**/<image>, its classes found in one place and every file scanned.

    class_folders(root)     the class names: sub-folders, sorted, hidden ones skipped
    scan_folder(root)       FolderScan: the usable images with labels, bad files with reasons, ignored files counted

The checks themselves (and their cache) are `imgcls.data.scan.scan_files`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls.data.scan import FileCheck, scan_files
from imgcls.errors import ImgclsError

RUNS_MARKER = ".imgcls-runs"  # written into every runs folder: imgcls' output is never data


@dataclass
class FolderScan:
    """The usable images of a folder-per-class tree, and what was left out of it."""

    root: Path
    class_names: list[str]
    files: list[str]  # usable images (original paths), class by class, sorted
    labels: np.ndarray  # int, index into class_names
    readable: list[str]  # per file, what TensorFlow reads: the file itself or its converted PNG
    checks: list[FileCheck]  # per file: format, mode, size, content hash
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path relative to root, reason)
    ignored: int = 0  # hidden files and files that are not images
    dropped_classes: list[str] = field(default_factory=list)  # empty, dropped by allow_empty_classes
    nested_classes: list[str] = field(default_factory=list)  # the same sub-folders in every class: root one level too high?
    scanned: int = 0  # files looked at
    cached: int = 0  # of which answered by the cache
    seconds: float = 0.0


def scan_folder(root: Path, class_names: list[str] | None = None, on_bad_image: str = "skip",
                allow_empty_classes: bool = False, ignore_classes: list[str] = (), key: str = "data.dir") -> FolderScan:
    """Check every file of `root/<class>/**`; `class_names` forces the classes (a validation or test folder).

    Raises ImgclsError for a missing folder, fewer than 2 classes, a class without
    usable images (unless `allow_empty_classes`), and any bad file when
    `on_bad_image` is "error".
    """
    start = time.perf_counter()
    root = Path(root)
    names = _required_classes(root, class_names, ignore_classes, key)
    keys, labels, ignored, unlisted = [], [], 0, []
    for index, name in enumerate(names):
        found, hidden, cannot_list = _walk(root, name)
        keys += found
        labels += [index] * len(found)
        ignored += hidden
        unlisted += cannot_list
    paths = [os.path.join(root, key) for key in keys]  # plain strings: pathlib is slow for 100,000 files
    scanned, cached = scan_files(paths, root, prune=True)

    scan = FolderScan(root, names, [], np.zeros(0, np.int64), [], [], scanned=len(paths), cached=cached)
    kept_labels = []
    for found, key, label in zip(scanned, keys, labels):
        if found.is_image:
            scan.files.append(found.path)
            scan.readable.append(found.readable)
            scan.checks.append(found.check)
            kept_labels.append(label)
        elif found.check.kind == "bad":
            scan.bad.append((key, found.check.reason))
        else:
            scan.ignored += 1
    scan.ignored += ignored
    scan.bad += unlisted
    scan.nested_classes = _shared_subfolders(root, names)
    scan.labels = np.asarray(kept_labels, dtype=np.int64)
    if scan.bad and on_bad_image == "error":
        raise ImgclsError(f"{root}: {len(scan.bad)} bad image file(s): {describe_bad(scan.bad)}; fix or remove them, "
                          "or set data.on_bad_image: skip to leave them out")
    if class_names is None:
        _drop_empty_classes(scan, allow_empty_classes)
    scan.seconds = time.perf_counter() - start
    return scan


def describe_bad(bad: list[tuple[str, str]], limit: int = 3) -> str:
    """'a.jpg (truncated), b.png (empty file) and 5 more' for one-line messages."""
    shown = ", ".join(f"{path} ({reason})" for path, reason in bad[:limit])
    return shown + (f" and {len(bad) - limit} more" if len(bad) > limit else "")


def class_folders(root: Path) -> list[str]:
    """The class names of a folder-per-class tree: its sub-folders, sorted.

    Skipped: hidden folders (.imgcls_cache) and imgcls' own runs folders (a
    `--runs-dir` inside the data folder, or `data.dir: .` beside `runs/`), which
    are never data. A name that is not valid UTF-8 is an error: it could not be
    written into classes.json or split.csv.
    """
    names = sorted(p.name for p in Path(root).iterdir()
                   if p.is_dir() and not p.name.startswith(".") and not is_runs_folder(p))
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(name).decode("utf-8", "backslashreplace")
            raise ImgclsError(f"{Path(root).resolve()}: the class folder name {shown!r} is not valid UTF-8; rename it") from None
    return names


def is_runs_folder(folder: Path) -> bool:
    """Whether `folder` holds imgcls runs: it has the marker create_run writes, or a `latest` pointer."""
    return (folder / RUNS_MARKER).exists() or os.path.lexists(folder / "latest")


def _required_classes(root: Path, class_names: list[str] | None, ignore: list[str], key: str) -> list[str]:
    """The classes to scan: all of `root`'s (at least 2), or exactly `class_names` (a validation or test folder)."""
    if not root.is_dir():
        raise ImgclsError(
            f"data folder not found: {root} (set {key} to a folder with one sub-folder per class; "
            f"relative paths start from {Path.cwd()})"
        )
    found = class_folders(root)
    if class_names is None:
        if len(found) < 2:
            what = f"only one class folder ({found[0]})" if found else "no class sub-folders"
            raise ImgclsError(f"{root}: {what}; a classifier needs at least 2 (put each class's images in data/<class_name>/)")
        return found
    missing = sorted(set(class_names) - set(found))
    extra = sorted(set(found) - set(class_names) - set(ignore))
    if missing or extra:
        what = "; ".join(([f"missing class folders {missing}"] if missing else []) +
                         ([f"class folders the training data does not have {extra}"] if extra else []))
        raise ImgclsError(f"{root}: {what}; it must have the same classes as the training data")
    return list(class_names)


def _shared_subfolders(root: Path, names: list[str]) -> list[str]:
    """The sub-folder names every class folder has, when none holds a file itself: train/<class>, valid/<class> ...
    under data.dir means it points one level too high (it would learn "train" against "valid")."""
    shared = None
    for name in names:
        try:
            entries = list(os.scandir(root / name))
        except OSError:
            return []
        if any(e.is_file() and not e.name.startswith(".") for e in entries):
            return []
        folders = {e.name for e in entries if e.is_dir() and not e.name.startswith(".")}
        shared = folders if shared is None else shared & folders
    return sorted(shared) if shared and len(shared) >= 2 else []


def _walk(root: Path, class_name: str) -> tuple[list[str], int, list[tuple[str, str]]]:
    """Paths ("class/sub/file", sorted) of every file under root/class_name, how many hidden files were
    skipped, and the sub-folders that could not be listed (path, reason).

    Hidden files and folders are skipped; folder links are not followed.
    """
    files, hidden, unlisted = [], 0, []

    def note(error: OSError) -> None:
        unlisted.append((Path(os.path.relpath(error.filename, root)).as_posix(), f"folder not readable ({error.strerror})"))

    for parent, dirs, names in os.walk(os.path.join(root, class_name), onerror=note):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        prefix = Path(os.path.relpath(parent, root)).as_posix()
        for name in names:
            if name.startswith("."):
                hidden += 1
            else:
                files.append(f"{prefix}/{name}")
    return sorted(files), hidden, unlisted


def _drop_empty_classes(scan: FolderScan, allow: bool) -> None:
    counts = np.bincount(scan.labels, minlength=len(scan.class_names))
    empty = [name for name, n in zip(scan.class_names, counts) if n == 0]
    if empty and not allow:
        name = empty[0]
        bad = sum(1 for path, _ in scan.bad if path.split("/", 1)[0] == name)
        why = f" ({bad} bad file(s) skipped)" if bad else ""
        more = f" (and {len(empty) - 1} more empty: {', '.join(empty[1:])})" if len(empty) > 1 else ""
        raise ImgclsError(f"{scan.root / name}: no usable images in this class folder{why}{more}; add images, "
                          "remove the folder, or set data.allow_empty_classes: true to drop it")
    if not empty:
        return
    keep = [i for i, n in enumerate(counts) if n > 0]
    if len(keep) < 2:
        raise ImgclsError(f"{scan.root}: only {len(keep)} class(es) with usable images; a classifier needs at least 2")
    new_index = {old: new for new, old in enumerate(keep)}
    scan.labels = np.asarray([new_index[label] for label in scan.labels], dtype=np.int64)
    scan.dropped_classes = empty
    scan.class_names = [scan.class_names[i] for i in keep]
