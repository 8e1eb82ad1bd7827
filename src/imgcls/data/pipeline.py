"""The tf.data pipeline: image files to uint8 batches, the same way for training and prediction.

    load_image / decode_image    THE preprocessing: read, decode, resize (antialiased), uint8 [h, w, c]
    image_batches                decoded images of a list of files, batch by batch (predict, evaluate,
                                 export's check and calibration, the sample grid)
    make_datasets(plan, config)  training and validation datasets of a DataPlan: cached uint8 images,
                                 reshuffled every epoch, batched, augmented (training only), prefetched

Rescaling to [0, 1] lives inside the model, so a model takes raw 0-255 pixels
and `load_image` is all the preprocessing there is. It only ever reads files
that the scan has checked, or converted for it (the `readable` paths).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from imgcls.data.plan import DataPlan
from imgcls.errors import first_line
from imgcls.runtime import import_tensorflow

if TYPE_CHECKING:
    import tensorflow as tf

    from imgcls.config import Config


def load_image(path: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """Read, decode and resize one image file to uint8 [h, w, channels].

    The one preprocessing function: training and `imgcls predict` both use it.
    Its TensorFlow-free twin, `imgcls.data.lite_image.load_image_lite` (a .tflite
    model on LiteRT), is held to it pixel for pixel by tests/test_lite.py.
    """
    tf = import_tensorflow()

    return decode_image(tf.io.read_file(path), image_size, channels)


def decode_image(contents: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """`load_image` after the file is read: encoded bytes to uint8 [h, w, channels].

    Separate so an exported SavedModel can take encoded JPEG/PNG bytes and
    prepare them exactly as training did. `imgcls.data.lite_image.decode_image_lite`
    is its twin without TensorFlow: change one, change the other, and
    tests/test_lite.py, which holds them together, tells whether they still agree.
    """
    tf = import_tensorflow()

    def decode(into: int):
        return tf.io.decode_image(contents, channels=into, expand_animations=False)

    if channels == 1:
        # TensorFlow decodes GIF only to 3 channels and BMP to 3 or 4: those go through RGB to grey.
        rgb_only = tf.logical_or(tf.equal(tf.strings.substr(contents, 0, 3), b"GIF"),
                                 tf.equal(tf.strings.substr(contents, 0, 2), b"BM"))
        image = tf.cond(rgb_only, lambda: tf.image.rgb_to_grayscale(decode(3)), lambda: decode(1))
    else:
        image = decode(channels)
    image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def images_dataset(files: list[str], image_size: tuple[int, int], channels: int) -> tf.data.Dataset:
    """Decoded uint8 images of `files`, in order, decoded in parallel."""
    tf = import_tensorflow()

    return tf.data.Dataset.from_tensor_slices(files).map(
        lambda path: load_image(path, image_size, channels), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).with_options(_without_autotune_thread(tf))


def image_batches(readable: list[str], image_size: tuple[int, int], channels: int, batch_size: int = 32) -> Iterator[np.ndarray]:
    """uint8 batches [n, h, w, c] of the images `readable` names, in order: the one batched decode."""
    if not readable:
        return  # an empty list of files would be a float tensor to tf.data, not strings
    tf = import_tensorflow()

    for batch in images_dataset([str(p) for p in readable], image_size, channels).batch(batch_size).prefetch(tf.data.AUTOTUNE):
        yield batch.numpy()


def unreadable_image(exc: BaseException, files: Sequence[str] = ()) -> str | None:
    """Which file and what went wrong, when `exc` is TensorFlow failing to read or decode one of `files`;
    None for any other exception.

    The scan checked every file, but a file can change after it (deleted,
    made unreadable, overwritten): TensorFlow then fails mid-epoch, with a
    message that buries the file's name in graph context, or leaves it out.
    The files themselves say which one it was.
    """
    tf = import_tensorflow()
    decoding = ("decode", "image", "png", "jpeg", "gif", "bmp", "readfile", "read_file")
    if isinstance(exc, (tf.errors.NotFoundError, tf.errors.PermissionDeniedError, tf.errors.DataLossError)):
        problem = first_line(exc, 300, prefer=("no such file", "permission denied", "data loss"))
    elif isinstance(exc, tf.errors.InvalidArgumentError) and any(word in str(exc).lower() for word in decoding):
        problem = first_line(exc, 300, prefer=decoding)
    else:
        return None
    unreadable = _files_that_cannot_be_opened(files)
    if unreadable:
        more = f" (and {len(unreadable) - 3} more)" if len(unreadable) > 3 else ""
        return "; ".join(unreadable[:3]) + more
    named = re.search(r"(/[^\s;:'\"]+?\.\w+)(?:;|\s|$)", str(exc))
    return f"{named.group(1)}: {problem}" if named else problem


def _files_that_cannot_be_opened(files: Sequence[str]) -> list[str]:
    found = []
    for path in files:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            found.append(f"{path}: {exc.strerror or type(exc).__name__}")
    return found


def encode_labels(labels: np.ndarray, label_mode: str, num_classes: int) -> np.ndarray:
    """Class indices in the form `label_mode` trains with: int, one-hot (categorical) or one column (binary)."""
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

    from imgcls.data.augment import make_augmenter

    data = config.data
    batch_size = batch_size or data.batch_size
    images = images_dataset(files, data.image_size, config.channels)
    ds = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(encode_labels(labels, data.label_mode, num_classes)))
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
    by seconds of idle waiting, and so was the end of one `imgcls predict` in
    two (docs/benchmarks.md, "Speed"). Options reach
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
    test: tf.data.Dataset | None = None  # held out: never seen by training or checkpoint selection
    test_files: list[str] = field(default_factory=list)

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
    has_test = test is not None and len(test) > 0
    return Datasets(train=build("train", training=True), val=build("val", training=False), class_names=plan.class_names,
                    train_files=train.files, val_files=val.files, test=build("test", training=False) if has_test else None,
                    test_files=test.files if test is not None else [])
