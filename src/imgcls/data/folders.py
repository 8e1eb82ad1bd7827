"""A folder of classes: data/<class>/**/<image>, its classes found in one place and every file scanned.

    class_folders(root)     the class names: sub-folders, sorted, hidden ones skipped
    scan_folder(root)       FolderScan: the usable images with labels, bad files with reasons, ignored files counted
    scan_folder(root, source=LabelSource(...))   the same for a folder labelled by file names or a CSV file

The checks themselves (and their cache) are `imgcls.data.scan.scan_files`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls.data.labels import LabelSource, order_classes
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
                allow_empty_classes: bool = False, ignore_classes: list[str] = (), key: str = "data.dir",
                source: LabelSource | None = None) -> FolderScan:
    """Check every file under `root` and label its images by `source` (default: their class folder);
    `class_names` forces the classes (a validation or test folder).

    Raises ImgclsError for a missing folder, fewer than 2 classes, a class without
    usable images (unless `allow_empty_classes`), a label the forced classes do not
    have, and any bad file (an unlabelled image included) when `on_bad_image` is "error".
    """
    start = time.perf_counter()
    root, source = Path(root), source or LabelSource()
    if source.from_folders:
        keys, ignored, unlisted = _class_folder_files(root, class_names, ignore_classes, key)
    else:
        _require_folder(root, key, "a folder of images")
        keys, ignored, unlisted = walk_files(root)
    paths = [os.path.join(root, key) for key in keys]  # plain strings: pathlib is slow for 100,000 files
    scanned, cached = scan_files(paths, root, prune=True)

    scan = FolderScan(root, [], [], np.zeros(0, np.int64), [], [], scanned=len(paths), cached=cached)
    # Broken images are labelled too, so the CSV row of a truncated file is not also reported as naming no image.
    candidates = [(found, key) for found, key in zip(scanned, keys) if found.check.kind != "other"]
    scan.ignored = len(keys) - len(candidates)
    if source.from_folders:
        labels = [(key.split("/", 1)[0], "") for _, key in candidates]
    else:
        labels = source.label(root, [key for _, key in candidates])
    images, names = [], []
    for (found, key), (name, why) in zip(candidates, labels):
        if not found.is_image:
            scan.bad.append((key, found.check.reason))
        elif not name:
            scan.bad.append((key, why))
        else:
            images.append((found, key))
            names.append(name)
    scan.class_names = class_names or _classes_of(root, names, source)
    index = {name: i for i, name in enumerate(scan.class_names)}
    _check_known(root, names, index, class_names is not None, source)
    kept_labels = []
    for (found, _), name in zip(images, names):
        scan.files.append(found.path)
        scan.readable.append(found.readable)
        scan.checks.append(found.check)
        kept_labels.append(index[name])
    scan.ignored += ignored
    scan.bad += unlisted
    scan.nested_classes = _shared_subfolders(root, scan.class_names) if source.from_folders else []
    scan.labels = np.asarray(kept_labels, dtype=np.int64)
    if scan.bad and on_bad_image == "error":
        raise ImgclsError(f"{root}: {len(scan.bad)} bad image file(s): {describe_bad(scan.bad)}; fix or remove them, "
                          "or set data.on_bad_image: skip to leave them out")
    if class_names is None:
        _drop_empty_classes(scan, allow_empty_classes)
    scan.seconds = time.perf_counter() - start
    return scan


def _class_folder_files(root: Path, class_names: list[str] | None, ignore: list[str],
                        key: str) -> tuple[list[str], int, list[tuple[str, str]]]:
    """The files of each class folder to scan ("class/sub/file"), hidden ones counted, unlistable folders."""
    keys, hidden, unlisted = [], 0, []
    for name in _required_classes(root, class_names, ignore, key):
        found, skipped, cannot_list = walk_files(root, name)
        keys += found
        hidden += skipped
        unlisted += cannot_list
    return keys, hidden, unlisted


def _classes_of(root: Path, names: list[str], source: LabelSource) -> list[str]:
    """The classes the labels of a file-name or CSV source name (folders: the class folders themselves)."""
    if source.from_folders:
        return class_folders(root)
    classes = order_classes({name for name in names if name}, source.class_names)
    if not classes and source.kind == "csv":
        source.table.no_match(root)
    if len(classes) < 2 and not source.class_names:
        what = f"only one label ({classes[0]})" if classes else "no labelled image"
        raise ImgclsError(f"{root}: {what} in the labels from {source.describe()}; a classifier needs at least 2 classes")
    return classes


def _check_known(root: Path, names: list[str], index: dict[str, int], forced: bool, source: LabelSource) -> None:
    """A label outside the classes: the training data lacks it (a validation folder), or data.class_names does."""
    unknown = sorted({name for name in names if name and name not in index})
    if not unknown:
        return
    shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
    if forced:
        raise ImgclsError(f"{root}: labels the training data does not have ({shown}); it must have the training data's classes")
    raise ImgclsError(f"data.class_names: does not list {shown}, labels of images in {root} (from "
                      f"{source.describe()}); add them, or give their index in the list")


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
    names = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not skipped_folder(p))
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(name).decode("utf-8", "backslashreplace")
            raise ImgclsError(f"{Path(root).resolve()}: the class folder name {shown!r} is not valid UTF-8; rename it") from None
    return names


def skipped_folder(folder: Path) -> bool:
    """Never data: hidden folders (.imgcls_cache), macOS' __MACOSX from a zip, imgcls' own runs folders."""
    return folder.name.startswith(".") or folder.name == "__MACOSX" or is_runs_folder(folder)


def is_runs_folder(folder: Path) -> bool:
    """Whether `folder` holds imgcls runs: it has the marker create_run writes, or a `latest` pointer."""
    return (folder / RUNS_MARKER).exists() or os.path.lexists(folder / "latest")


def _required_classes(root: Path, class_names: list[str] | None, ignore: list[str], key: str) -> list[str]:
    """The classes to scan: all of `root`'s (at least 2), or exactly `class_names` (a validation or test folder)."""
    _require_folder(root, key, "a folder with one sub-folder per class")
    found = class_folders(root)
    if class_names is None:
        if len(found) < 2:
            what = f"only one class folder ({found[0]})" if found else "no class sub-folders"
            raise ImgclsError(f"{root}: {what}; a classifier needs at least 2 (put each class's images in "
                              "data/<class_name>/, or, when file names or a CSV file hold the labels, set data.labels)")
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


def _require_folder(root: Path, key: str, what: str) -> None:
    if not root.is_dir():
        raise ImgclsError(f"data folder not found: {root} (set {key} to {what}; relative paths start from {Path.cwd()})")


def walk_files(root: Path, under: str = "") -> tuple[list[str], int, list[tuple[str, str]]]:
    """Paths ("under/sub/file", sorted, relative to `root`) of every file under root/under, how many hidden
    files were skipped, and the sub-folders that could not be listed (path, reason).

    Hidden files and folders, and imgcls' own runs folders, are skipped; folder links are not followed.
    """
    files, hidden, unlisted = [], 0, []

    def note(error: OSError) -> None:
        unlisted.append((Path(os.path.relpath(error.filename, root)).as_posix(), f"folder not readable ({error.strerror})"))

    for parent, dirs, names in os.walk(os.path.join(root, under), onerror=note):
        dirs[:] = [d for d in dirs if not skipped_folder(Path(parent, d))]
        prefix = Path(os.path.relpath(parent, root)).as_posix()
        for name in names:
            if name.startswith("."):
                hidden += 1
            else:
                files.append(name if prefix == "." else f"{prefix}/{name}")
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
