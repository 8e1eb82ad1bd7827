"""Listing a folder-per-class tree, the seeded split, and the tf.data pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image

from imgcls.config import load_config
from imgcls.data import list_images, load_image, make_datasets, split_data, split_stratified
from imgcls.errors import ImgclsError


def test_classes_are_sorted_subfolders_and_images_are_found_recursively(tmp_path):
    make_image_folder(tmp_path, per_class=2)
    nested = tmp_path / "red" / "more"
    nested.mkdir()
    Image.new("RGB", (10, 10)).save(nested / "deep.JPG")
    (tmp_path / "red" / "notes.txt").write_text("not an image")
    (tmp_path / "red" / ".hidden.png").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    listing = list_images(tmp_path)
    assert listing.class_names == ["blue", "green", "red"]
    red = [f for f, label in zip(listing.files, listing.labels) if label == 2]
    assert len(red) == 3 and any(f.endswith("deep.JPG") for f in red)


def test_missing_folder_one_class_and_empty_class_are_errors_that_name_the_folder(tmp_path):
    with pytest.raises(ImgclsError, match="data folder not found: .*nowhere"):
        list_images(tmp_path / "nowhere")
    make_image_folder(tmp_path / "one", classes={"only": (1, 2, 3)}, per_class=2)
    with pytest.raises(ImgclsError, match="only one class folder"):
        list_images(tmp_path / "one")
    make_image_folder(tmp_path / "two", per_class=2)
    (tmp_path / "two" / "empty").mkdir()
    with pytest.raises(ImgclsError, match=r"two/empty: no images"):
        list_images(tmp_path / "two")


def test_split_is_disjoint_complete_and_the_same_for_the_same_seed():
    labels = np.repeat(np.arange(4), [50, 30, 7, 2])
    train, val = split_stratified(labels, 0.2, seed=123)
    assert set(train).isdisjoint(val)
    assert sorted([*train, *val]) == list(range(len(labels)))
    again_train, again_val = split_stratified(labels, 0.2, seed=123)
    assert list(val) == list(again_val) and list(train) == list(again_train)
    assert list(split_stratified(labels, 0.2, seed=7)[1]) != list(val)


def test_split_keeps_every_class_in_validation():
    labels = np.repeat(np.arange(3), [100, 10, 2])
    _, val = split_stratified(labels, 0.2, seed=1)
    counts = np.bincount(labels[val], minlength=3)
    assert list(counts) == [20, 2, 1]


def test_load_image_gives_uint8_of_the_requested_size_and_channels(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (80, 40), (255, 0, 0)).save(path)
    rgb = load_image(str(path), (32, 32), 3).numpy()
    grey = load_image(str(path), (16, 24), 1).numpy()
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    assert tuple(rgb[5, 5]) == (255, 0, 0)
    assert grey.shape == (16, 24, 1)


@pytest.mark.parametrize("label_mode, shape, dtype", [
    ("int", (4,), "int32"), ("categorical", (4, 3), "float32"),
])
def test_batches_have_raw_pixel_floats_and_labels_in_the_label_mode(tiny_data, label_mode, shape, dtype):
    config = load_config(raw={"data": {"dir": str(tiny_data), "image_size": 32, "batch_size": 4, "label_mode": label_mode}})
    train, _ = make_datasets(split_data(config), config)
    images, labels = next(iter(train))
    assert images.shape == (4, 32, 32, 3) and images.dtype.name == "float32"
    assert float(images.numpy().max()) > 1.0  # 0-255: rescaling happens inside the model
    assert labels.shape == shape and labels.dtype.name == dtype


def test_training_images_are_reshuffled_every_epoch_validation_keeps_its_order(tiny_data):
    config = load_config(raw={"data": {"dir": str(tiny_data), "image_size": 8, "batch_size": 4}})
    train, val = make_datasets(split_data(config), config)

    def epoch_order(ds):
        return np.concatenate([np.asarray(x).reshape(len(x), -1).sum(axis=1) for x, _ in ds])

    first, second = epoch_order(train), epoch_order(train)
    assert sorted(first) == pytest.approx(sorted(second)) and list(first) != list(second)
    assert list(epoch_order(val)) == list(epoch_order(val))


def test_binary_label_mode_needs_two_classes(tiny_data):
    config = load_config(raw={"data": {"dir": str(tiny_data), "label_mode": "binary"}})
    with pytest.raises(ImgclsError, match="binary needs exactly 2 classes"):
        split_data(config)


def test_separate_validation_folder_must_have_the_same_classes(tmp_path):
    make_image_folder(tmp_path / "train", per_class=2)
    make_image_folder(tmp_path / "val", classes={"red": (1, 1, 1), "blue": (2, 2, 2)}, per_class=1)
    config = load_config(raw={"data": {"dir": str(tmp_path / "train"), "val_dir": str(tmp_path / "val")}})
    with pytest.raises(ImgclsError, match=r"missing class folders \['green'\]"):
        split_data(config)
