"""TensorFlow Datasets by name (`data.tfds: tf_flowers`): downloaded once, written out as image folders, then
planned like any data folder.

    materialize("tf_flowers", None)   TfdsData: <user cache>/tfds/tf_flowers/<version>/<split>/<class>/<n>.jpg

Writing the images out (their original bytes, not decoded) means a TFDS
dataset goes through the same scan, split, de-duplication, cache, split.csv,
`imgcls evaluate` and `imgcls inspect` as a folder, and nothing downstream
knows it came from TFDS. The download is TFDS' own, with the user's network;
it keeps its prepared copy in $TFDS_DATA_DIR (default ~/tensorflow_datasets),
which a machine without network can be given by copying it in.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from imgcls.data.scan_cache import user_cache_dir
from imgcls.errors import ImgclsError, did_you_mean, first_line
from imgcls.files import atomic_folder

VALIDATION_SPLITS = ("validation", "valid", "val")


@dataclass
class TfdsData:
    """A TFDS dataset written out: one folder of class folders per subset."""

    name: str
    version: str
    root: Path
    splits: dict[str, str]  # subset -> TFDS split, e.g. {"train": "train[:80%]", "val": "train[80%:]"}
    folders: dict[str, Path]

    def describe(self) -> str:
        used = ", ".join(f"{subset} = {split}" for subset, split in self.splits.items())
        line = f"data.tfds {self.name} {self.version}: {used}, written out in {self.root}"
        if "val" not in self.splits:
            line += "; validation images are drawn from train (data.validation_split)"
        return line

    def origin(self) -> dict:
        return {"tfds": self.name, "version": self.version, "splits": self.splits}


def materialize(name: str, split_setting: str | dict | None, device: str | int | None = None) -> TfdsData:
    """Each subset's split of TFDS dataset `name` as image folders in the user cache (written once, atomically)."""
    tfds = _import_tfds(device)
    builder = _builder(tfds, name)
    version = str(builder.info.version)
    image_key, label_key = _feature_keys(builder, name)  # before any download: is it an image classification set?
    if split_setting is None and not builder.info.splits:
        _download(builder, name)  # the default splits are the dataset's own: known once it is prepared
    splits = _choose_splits(builder, split_setting)
    root = user_cache_dir() / "tfds" / _safe(name) / version
    folders = {subset: root / _folder_name(split) for subset, split in splits.items()}
    missing = {subset: folder for subset, folder in folders.items() if not folder.is_dir()}
    if missing:
        _download(builder, name)
    class_names = builder.info.features[label_key].names
    for subset, folder in missing.items():
        print(f"data.tfds {name}: writing the {splits[subset]} images to {folder} (once)", file=sys.stderr)
        _write_split(tfds, builder, splits[subset], folder, image_key, label_key, class_names)
    return TfdsData(name, version, root, splits, folders)


def class_names(name: str) -> list[str] | None:
    """The dataset's class names from its metadata (no download), or None when TFDS cannot tell."""
    tfds = _import_tfds(None)
    builder = _builder(tfds, name)
    try:
        return list(builder.info.features[_feature_keys(builder, name)[1]].names)
    except (ImgclsError, KeyError):
        return None


def _import_tfds(device):
    from imgcls.runtime import import_tensorflow

    import_tensorflow(device)  # TFDS imports TensorFlow: through imgcls' one door, so the GPUs are set up first
    try:
        return importlib.import_module("tensorflow_datasets")
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith(("tensorflow_datasets", "importlib_resources")):
            raise
        raise ImgclsError("data.tfds: needs TensorFlow Datasets, an optional extra: pip install 'imgcls[tfds]'") from None


def _builder(tfds, name: str):
    try:
        return tfds.builder(name)
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders()
        hint = did_you_mean(name.split("/")[0].split(":")[0], known)
        raise ImgclsError(f"data.tfds: no TensorFlow Datasets dataset {name!r}" + (f"; {hint}" if hint else "")
                          + " (the catalog: https://www.tensorflow.org/datasets/catalog)") from None
    except (ValueError, AssertionError) as error:  # an unknown config (name/config) or version (name:1.2.3)
        raise ImgclsError(f"data.tfds: {name!r}: {first_line(error, 200)}; the catalog lists each dataset's configs and "
                          "versions: https://www.tensorflow.org/datasets/catalog") from None


def _choose_splits(builder, setting: str | dict | None) -> dict[str, str]:
    """data.tfds_split as {subset: split}: as given, else train plus the dataset's validation and test splits."""
    if isinstance(setting, dict):
        return {subset: setting[subset] for subset in ("train", "val", "test") if subset in setting}
    if isinstance(setting, str):
        return {"train": setting}
    available = set(builder.info.splits.keys())
    if available and "train" not in available:
        raise ImgclsError(f"data.tfds_split: {builder.info.name} has no train split; name one of "
                          f"{', '.join(sorted(available))}, e.g. data.tfds_split: {sorted(available)[0]}")
    splits = {"train": "train"}
    val = next((split for split in VALIDATION_SPLITS if split in available), None)
    if val:
        splits["val"] = val
    if "test" in available:
        splits["test"] = "test"
    return splits


def _download(builder, name: str) -> None:
    """TFDS' download and preparation, once; its progress goes to stderr (stdout may be --json)."""
    if builder.is_prepared():
        return
    where = Path(builder.data_dir)
    copy_it = (f"it needs the network once; without it, copy a prepared {where} from a machine that has one into the "
               "same place (TFDS keeps its data in $TFDS_DATA_DIR, default ~/tensorflow_datasets)")
    # tfds.testing.mock_data swaps download_and_prepare for a no-op (the offline tests): nothing to reach then.
    genuine = type(builder).download_and_prepare.__name__ == "download_and_prepare"
    if genuine and not _network_reachable():
        raise ImgclsError(f"data.tfds: cannot download {name}: no network (storage.googleapis.com does not resolve); "
                          + copy_it)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            builder.download_and_prepare()
    except Exception as error:  # noqa: BLE001 - any download failure (network, disk, checksum) is the user's to fix
        reason = re.sub(r"\s+", " ", str(error)).strip()[:200] or type(error).__name__
        raise ImgclsError(f"data.tfds: could not download and prepare {name} ({type(error).__name__}: {reason}); "
                          + copy_it) from None


def _network_reachable(host: str = "storage.googleapis.com", seconds: float = 5.0) -> bool:
    """Whether a download can start: TFDS' own mirror's name resolves (behind a proxy, assume it can). Without
    this, an offline download retries for minutes before it fails."""
    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    resolved: list[bool] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443)
            resolved.append(True)
        except OSError:
            resolved.append(False)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(resolved and resolved[0])


def _feature_keys(builder, name: str) -> tuple[str, str]:
    """The image and label features: the dataset's supervised keys, else its Image and ClassLabel features."""
    features = builder.info.features
    keys = builder.info.supervised_keys
    if keys and len(keys) == 2 and all(isinstance(key, str) for key in keys):
        image, label = keys
    else:
        kinds = {key: type(feature).__name__ for key, feature in features.items()}
        image = next((key for key, kind in kinds.items() if kind == "Image"), None)
        label = next((key for key, kind in kinds.items() if kind == "ClassLabel"), None)
    if (image not in features or type(features[image]).__name__ != "Image"
            or label not in features or type(features[label]).__name__ != "ClassLabel"):
        raise ImgclsError(f"data.tfds: {name} is not an image classification dataset (it needs an image and a class label)")
    return image, label


def _write_split(tfds, builder, split: str, folder: Path, image_key: str, label_key: str, class_names: list[str]) -> None:
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False,
                                     decoders={image_key: tfds.decode.SkipDecoding()})
    except ValueError as error:  # an unknown split, or a slice TFDS cannot read
        raise ImgclsError(f"data.tfds_split: {split!r}: {first_line(error, 160)}") from None
    names = [_safe(name) or str(i) for i, name in enumerate(class_names)]
    with atomic_folder(folder) as building:
        for name in set(names):
            (building / name).mkdir()
        for n, example in enumerate(tfds.as_numpy(dataset)):
            data = example[image_key]
            (building / names[int(example[label_key])] / f"{n}{_extension(data)}").write_bytes(data)


def _extension(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    return ".img"  # the scan reads images by content: any format Pillow knows is found


def _folder_name(split: str) -> str:
    """A split as a folder name: train stays train; train[:80%] gets a readable name and a hash (slices differ)."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", split):
        return split
    return f"{_safe(split)}-{hashlib.sha1(split.encode()).hexdigest()[:8]}"


def _safe(name: str) -> str:
    """A name as a file name on every system: only what Windows or POSIX forbids is replaced ("colt's foot" stays)."""
    return re.sub(r'[<>:"/\\|?*\x00-\x1f]+', "_", name).strip(" .")
