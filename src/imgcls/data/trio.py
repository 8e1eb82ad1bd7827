"""A data folder that is already split: train/ plus val/ (or valid/, validation/) and test/, as datasets ship.

    find_trio(root, source)   Trio (subset -> folder, and the unlabelled folders left out) or None

coffee_beans/train/<class>/ + coffee_beans/test/<class>/, Ultralytics'
train/ val/ test/, Food-11's flat train/ valid/ test/ labelled by file
names: pointing data.dir at the parent would otherwise train a "train vs
test" classifier. A test folder without labels (a competition's test/) is
not a test set: it is what `imgcls predict --format kaggle` is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imgcls.data.folders import class_folders, skipped_folder, walk_files
from imgcls.data.labels import LabelSource
from imgcls.errors import ImgclsError

SUBSET_OF_FOLDER = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class Trio:
    """The subsets a split data folder holds, and its unlabelled folders (not used)."""

    root: Path
    folders: dict[str, Path]  # train, and val and test when labelled
    unlabelled: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        used = " + ".join(f"{folder.name}/ ({subset})" for subset, folder in self.folders.items())
        line = f"{self.root}: split into {used}"
        if "val" not in self.folders:
            line += "; validation images are drawn from train/ (data.validation_split)"
        for folder in self.unlabelled:
            if not walk_files(folder)[0]:
                line += f"; {folder.name}/ is empty, so it is left out"
                continue
            template = next(iter(sorted(self.root.glob("*sample_submission*.csv"))), None)
            how = f"--template {template}" if template else "--format kaggle"
            line += (f"; {folder.name}/ has no labels, so it is left out (predict it with: imgcls predict "
                     f"{folder} --csv submission.csv {how})")
        return line


def find_trio(root: Path, source: LabelSource) -> Trio | None:
    """The subsets of `root` when its folders (hidden, junk and runs folders aside) are train, alone or with val
    and/or test. Other folders beside train and val or test are an error: is the data split or not?"""
    root = Path(root)
    if not root.is_dir():
        return None
    folders = [p for p in root.iterdir() if p.is_dir() and not skipped_folder(p)]
    roles = {folder: SUBSET_OF_FOLDER.get(folder.name.lower()) for folder in folders}
    if "train" not in roles.values():
        return None
    others = sorted(folder.name for folder, role in roles.items() if role is None)
    if others:
        held_out = sorted(folder.name for folder, role in roles.items() if role in ("val", "test"))
        if not held_out:
            return None  # a class called train among others (bus, car, train)
        raise ImgclsError(f"{root}: holds train/ and {', '.join(held_out)}/, a split data set, beside {', '.join(others)}/; "
                          "move those out, or point data.dir at the folder to train on")
    by_subset: dict[str, Path] = {}
    for folder in sorted(folders):
        subset = roles[folder]
        if subset in by_subset:
            raise ImgclsError(f"{root}: both {by_subset[subset].name}/ and {folder.name}/ look like the {subset} "
                              "folder; keep one (or set data.dir to the one to train on and data.val_dir)")
        by_subset[subset] = folder
    trio = Trio(root, {"train": by_subset["train"]})
    train = (by_subset["train"], walk_files(by_subset["train"])[0]) if not source.from_folders else None
    for subset in ("val", "test"):
        folder = by_subset.get(subset)
        if folder is None:
            continue
        if _labelled(folder, source, train):
            trio.folders[subset] = folder
        else:
            trio.unlabelled.append(folder)
    return trio


def _labelled(folder: Path, source: LabelSource, train: tuple[Path, list[str]] | None) -> bool:
    if source.from_folders:
        return bool(class_folders(folder))
    return source.has_labels(folder, walk_files(folder)[0], train=train)
