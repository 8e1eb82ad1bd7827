"""Data: folder-per-class listing, the seeded split, and the tf.data pipeline.

    data/<class_name>/**/<image>      classes are the sub-folder names, sorted

The flow is: `list_images` (one listing) -> `split_stratified` (one seeded
split, so train and validation never overlap) -> `make_dataset`, which
decodes each file once with `load_image`, caches the resized pixels as uint8,
reshuffles every image every epoch, batches and prefetches.

`load_image` is *the* preprocessing: `imgcls predict` calls the same function,
so a model never sees pixels prepared differently from training. Rescaling to
[0, 1] lives inside the model, so the model takes raw 0-255 pixels.

TensorFlow is imported inside the functions that need it, so listing and
splitting stay usable (and testable) without paying for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgcls.errors import ImgclsError

if TYPE_CHECKING:
    import tensorflow as tf

    from imgcls.config import Config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass
class Listing:
    """Every image of a folder-per-class tree, with its class index."""

    root: Path
    class_names: list[str]
    files: list[str]
    labels: np.ndarray  # int, index into class_names


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(root: Path, class_names: list[str] | None = None) -> Listing:
    """List `root/<class>/**/<image>`; `class_names` forces the classes (e.g. a validation folder)."""
    root = Path(root)
    if not root.is_dir():
        raise ImgclsError(
            f"data folder not found: {root} (set data.dir to a folder with one sub-folder per class; "
            f"relative paths start from {Path.cwd()})"
        )
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        class_names = found
        if len(class_names) < 2:
            what = f"only one class folder ({class_names[0]})" if class_names else "no class sub-folders"
            raise ImgclsError(f"{root}: {what}; a classifier needs at least 2 (put each class's images in data/<class_name>/)")
    else:
        missing = sorted(set(class_names) - set(found))
        if missing:
            raise ImgclsError(f"{root}: missing class folders {missing}; it must have the same classes as the training data")

    files, labels = [], []
    for index, name in enumerate(class_names):
        images = sorted(
            str(p) for p in (root / name).rglob("*")
            if p.is_file() and is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not images:
            raise ImgclsError(
                f"{root / name}: no images in this class folder (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        files += images
        labels += [index] * len(images)
    return Listing(root, list(class_names), files, np.asarray(labels, dtype=np.int64))


def split_stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation): each class gives `fraction` of its images, at least one if it has two.

    Seeded, so the same listing and seed always give the same split, and the
    two index sets are disjoint by construction.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        n_val = int(round(len(members) * fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# --------------------------------------------------------------------------- tf.data


def load_image(path: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """Read, decode and resize one image file to uint8 [h, w, channels].

    The one preprocessing function: training and `imgcls predict` both use it.
    """
    import tensorflow as tf

    return decode_image(tf.io.read_file(path), image_size, channels)


def decode_image(contents: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """`load_image` after the file is read: encoded bytes to uint8 [h, w, channels].

    Separate so an exported SavedModel can take encoded JPEG/PNG bytes and
    prepare them exactly as training did.
    """
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
    image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def images_dataset(files: list[str], image_size: tuple[int, int], channels: int) -> tf.data.Dataset:
    """Decoded uint8 images of `files`, in order, decoded in parallel."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(files).map(
        lambda path: load_image(path, image_size, channels), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def _encode_labels(labels: np.ndarray, label_mode: str, num_classes: int):
    if label_mode == "categorical":
        return np.eye(num_classes, dtype=np.float32)[labels]
    if label_mode == "binary":
        return labels.astype(np.float32)[:, None]
    return labels.astype(np.int32)


def make_dataset(files: list[str], labels: np.ndarray, config: Config, num_classes: int, training: bool) -> tf.data.Dataset:
    """Batches of (float32 0-255 images, labels in the form `label_mode` asks for).

    Order matters: cache the decoded uint8 images (a quarter of float32's
    memory), *then* shuffle single images (a new order of images, not just of
    batches, every epoch), then batch, cast and prefetch.
    """
    import tensorflow as tf

    data = config.data
    images = images_dataset(files, data.image_size, config.channels)
    ds = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(_encode_labels(labels, data.label_mode, num_classes)))
    if data.cache:
        ds = ds.cache()
    if training:
        buffer = data.shuffle_buffer or len(files)
        ds = ds.shuffle(buffer, seed=config.runtime.seed, reshuffle_each_iteration=True)
    ds = ds.batch(data.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


@dataclass
class Datasets:
    train: tf.data.Dataset
    val: tf.data.Dataset
    class_names: list[str]
    train_files: list[str]
    val_files: list[str]
    train_labels: np.ndarray
    val_labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_datasets(config: Config) -> Datasets:
    """List, split and wrap the data that `config.data` describes."""
    data = config.data
    listing = list_images(data.dir)
    if data.label_mode == "binary" and len(listing.class_names) != 2:
        raise ImgclsError(
            f"data.label_mode: binary needs exactly 2 classes, {data.dir} has {len(listing.class_names)}; "
            "use label_mode int or categorical"
        )
    if data.val_dir is not None:
        val_listing = list_images(data.val_dir, class_names=listing.class_names)
        train_files, train_labels = listing.files, listing.labels
        val_files, val_labels = val_listing.files, val_listing.labels
    else:
        train_idx, val_idx = split_stratified(listing.labels, data.validation_split, data.seed)
        if len(val_idx) == 0:
            raise ImgclsError(f"data.validation_split: {data.validation_split} of {len(listing.files)} images leaves no validation image; raise it")
        train_files, train_labels = [listing.files[i] for i in train_idx], listing.labels[train_idx]
        val_files, val_labels = [listing.files[i] for i in val_idx], listing.labels[val_idx]
    n = len(listing.class_names)
    return Datasets(
        train=make_dataset(train_files, train_labels, config, n, training=True),
        val=make_dataset(val_files, val_labels, config, n, training=False),
        class_names=listing.class_names,
        train_files=train_files,
        val_files=val_files,
        train_labels=train_labels,
        val_labels=val_labels,
    )
