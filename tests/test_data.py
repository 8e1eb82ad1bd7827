"""Listing a folder-per-class tree, the seeded split, and the tf.data pipeline."""

from __future__ import annotations


import numpy as np
import pytest
from conftest import make_image_folder, noisy_image
from PIL import Image

from imgcls.config import load_config
from imgcls.data.folders import scan_folder
from imgcls.data.pipeline import load_image, make_datasets
from imgcls.data.plan import choose_cache, class_weights, plan_data, split_stratified
from imgcls.errors import ImgclsError


def test_classes_are_sorted_subfolders_and_images_are_found_recursively(tmp_path):
    make_image_folder(tmp_path, per_class=2)
    nested = tmp_path / "red" / "more"
    nested.mkdir()
    Image.new("RGB", (10, 10)).save(nested / "deep.JPG")
    (tmp_path / "red" / "notes.txt").write_text("not an image")
    (tmp_path / "red" / ".hidden.png").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    scan = scan_folder(tmp_path)
    assert scan.class_names == ["blue", "green", "red"]
    red = [f for f, label in zip(scan.files, scan.labels) if label == 2]
    assert len(red) == 3 and any(f.endswith("deep.JPG") for f in red)
    assert scan.ignored == 2 and scan.bad == []


def test_missing_folder_one_class_and_empty_class_are_errors_that_name_the_folder(tmp_path):
    with pytest.raises(ImgclsError, match="data folder not found: .*nowhere"):
        scan_folder(tmp_path / "nowhere")
    make_image_folder(tmp_path / "one", classes={"only": (1, 2, 3)}, per_class=2)
    with pytest.raises(ImgclsError, match="only one class folder"):
        scan_folder(tmp_path / "one")
    make_image_folder(tmp_path / "two", per_class=2)
    (tmp_path / "two" / "empty").mkdir()
    with pytest.raises(ImgclsError, match=r"two/empty: no usable images"):
        scan_folder(tmp_path / "two")


def test_split_is_disjoint_complete_and_the_same_for_the_same_seed():
    labels = np.repeat(np.arange(4), [50, 30, 7, 2])
    train, val, test = split_stratified(labels, 0.2, seed=123, test_fraction=0.1)
    assert set(train).isdisjoint(val) and set(train).isdisjoint(test) and set(val).isdisjoint(test)
    assert sorted([*train, *val, *test]) == list(range(len(labels)))
    again = split_stratified(labels, 0.2, seed=123, test_fraction=0.1)
    assert all(list(a) == list(b) for a, b in zip(again, (train, val, test)))
    assert list(split_stratified(labels, 0.2, seed=7)[1]) != list(val)


def test_split_keeps_every_class_in_validation():
    labels = np.repeat(np.arange(3), [100, 10, 2])
    _, val, test = split_stratified(labels, 0.2, seed=1)
    assert list(np.bincount(labels[val], minlength=3)) == [20, 2, 1]
    assert len(test) == 0


def test_test_split_keeps_every_class_in_test_and_one_in_train():
    labels = np.repeat(np.arange(4), [100, 10, 3, 2])
    train, val, test = split_stratified(labels, 0.2, seed=1, test_fraction=0.1)
    assert list(np.bincount(labels[test], minlength=4)) == [10, 1, 1, 0]
    assert list(np.bincount(labels[val], minlength=4)) == [20, 2, 1, 1]
    assert list(np.bincount(labels[train], minlength=4)) == [70, 7, 1, 1]


def test_stratify_false_splits_all_images_at_random(tmp_path):
    make_image_folder(tmp_path, classes={"many": (1, 1, 1), "few": (2, 2, 2)}, per_class=10)
    for i in range(10, 40):
        noisy_image((1, 1, 1), (8, 8), seed=i).save(tmp_path / "many" / f"{i}.png")  # 40 against 10

    def val_counts(seed, stratify):
        raw = {"data": {"dir": str(tmp_path), "validation_split": 0.2, "seed": seed, "split": {"stratify": stratify}}}
        return plan_data(load_config(raw=raw)).counts()["val"]

    assert all(val_counts(seed, True) == [2, 8] for seed in range(5))  # [few, many]: each class gives a fifth
    plain = [val_counts(seed, False) for seed in range(5)]
    assert all(sum(counts) == 10 for counts in plain) and any(counts != [2, 8] for counts in plain)


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
def test_batches_are_raw_uint8_pixels_with_labels_in_the_label_mode(tiny_data, label_mode, shape, dtype):
    """uint8 all the way to the model: a quarter of float32's memory in the cache and the prefetch buffer."""
    config = load_config(raw={"data": {"dir": str(tiny_data), "image_size": 32, "batch_size": 4, "label_mode": label_mode}})
    datasets = make_datasets(plan_data(config), config)
    images, labels = next(iter(datasets.train))
    assert images.shape == (4, 32, 32, 3) and images.dtype.name == "uint8"  # rescaling happens inside the model
    assert labels.shape == shape and labels.dtype.name == dtype


def test_training_images_are_reshuffled_every_epoch_validation_keeps_its_order(tiny_data):
    config = load_config(raw={"data": {"dir": str(tiny_data), "image_size": 8, "batch_size": 4}, "train": {"epochs": 2}})
    datasets = make_datasets(plan_data(config), config)

    def epoch_order(ds):
        return np.concatenate([np.asarray(x).reshape(len(x), -1).sum(axis=1) for x, _ in ds])

    both = epoch_order(datasets.train)  # the training dataset holds every epoch, back to back
    first, second = both[:len(datasets.train_files)], both[len(datasets.train_files):]
    assert sorted(first) == pytest.approx(sorted(second)) and list(first) != list(second)
    assert list(epoch_order(datasets.val)) == list(epoch_order(datasets.val))


def test_a_resumed_training_dataset_repeats_the_epoch_order_of_an_uninterrupted_one(tiny_data):
    config = load_config(raw={"data": {"dir": str(tiny_data), "image_size": 8, "batch_size": 4}, "train": {"epochs": 3}})
    plan = plan_data(config)
    whole = [x.numpy().sum() for x, _ in make_datasets(plan, config).train]
    resumed = [x.numpy().sum() for x, _ in make_datasets(plan, config, first_epoch=2).train]
    assert resumed == pytest.approx(whole[-len(resumed):]) and len(resumed) == len(whole) // 3


def test_datasets_run_without_the_autotune_thread_that_stalled_the_end_of_training(tiny_data):
    # Deleting fit's training iterator mid-stream waited for that thread's sleep: 15-42 s after the last epoch.
    config = load_config(raw={"data": {"dir": str(tiny_data), "image_size": 32}})
    datasets = make_datasets(plan_data(config), config)
    assert datasets.train.options().autotune.enabled is False  # None is TF's default: on
    assert datasets.val.options().autotune.enabled is False


def test_predict_and_report_images_run_without_the_autotune_thread(tiny_data):
    # Predict on 500 images waited about 4.5 s after its last batch in one call of two.
    from imgcls.data.pipeline import images_dataset

    files = [str(p) for p in sorted(p for p in tiny_data.rglob("*") if p.is_file())[:2]]
    assert images_dataset(files, (32, 32), 3).batch(2).prefetch(1).options().autotune.enabled is False


def test_binary_label_mode_needs_two_classes(tiny_data):
    config = load_config(raw={"data": {"dir": str(tiny_data), "label_mode": "binary"}})
    with pytest.raises(ImgclsError, match="binary needs exactly 2 classes"):
        make_datasets(plan_data(config), config)


def test_separate_validation_folder_must_have_the_same_classes(tmp_path):
    make_image_folder(tmp_path / "train", per_class=2)
    make_image_folder(tmp_path / "val", classes={"red": (1, 1, 1), "blue": (2, 2, 2)}, per_class=1)
    config = load_config(raw={"data": {"dir": str(tmp_path / "train"), "val_dir": str(tmp_path / "val")}})
    with pytest.raises(ImgclsError, match=r"missing class folders \['green'\]"):
        make_datasets(plan_data(config), config)


def test_separate_validation_folder_must_not_have_extra_classes(tmp_path):
    make_image_folder(tmp_path / "train", classes={"red": (1, 1, 1), "blue": (2, 2, 2)}, per_class=2)
    make_image_folder(tmp_path / "val", per_class=1)
    config = load_config(raw={"data": {"dir": str(tmp_path / "train"), "val_dir": str(tmp_path / "val")}})
    with pytest.raises(ImgclsError, match=r"class folders the training data does not have \['green'\]"):
        plan_data(config)


# --------------------------------------------------------------------------- test set, duplicates


def test_test_split_gives_a_held_out_test_set_that_training_never_sees(tiny_data):
    config = load_config(raw={"data": {"dir": str(tiny_data), "image_size": 8, "validation_split": 0.25, "test_split": 0.25}})
    datasets = make_datasets(plan_data(config), config)
    assert len(datasets.test_files) == 9 and len(datasets.val_files) == 9 and len(datasets.train_files) == 18
    assert set(datasets.test_files).isdisjoint(datasets.train_files + datasets.val_files)
    images, _ = next(iter(datasets.test))
    assert images.shape[1:] == (8, 8, 3)


def test_test_dir_is_the_test_set(tmp_path):
    make_image_folder(tmp_path / "train", per_class=4)
    make_image_folder(tmp_path / "test", per_class=2, seed=5)
    plan = plan_data(load_config(raw={"data": {"dir": str(tmp_path / "train"), "test_dir": str(tmp_path / "test")}}))
    assert plan.counts()["test"] == [2, 2, 2]
    assert {row["subset"] for row in plan.split_rows()} == {"train", "val", "test"}


def test_duplicates_across_train_and_validation_are_kept_only_in_train(tmp_path):
    make_image_folder(tmp_path / "train", per_class=3)
    make_image_folder(tmp_path / "val", per_class=2, seed=9)
    copy = (tmp_path / "train" / "red" / "000.png").read_bytes()
    (tmp_path / "val" / "red" / "copy of 000.png").write_bytes(copy)
    raw = {"data": {"dir": str(tmp_path / "train"), "val_dir": str(tmp_path / "val")}}
    plan = plan_data(load_config(raw=raw))
    [duplicate] = plan.duplicates
    assert duplicate.subset == "val" and duplicate.path.endswith("copy of 000.png") and duplicate.dropped
    assert duplicate.same_as.endswith("train/red/000.png")
    assert not any(f.endswith("copy of 000.png") for f in plan.subsets["val"].files)
    kept = plan_data(load_config(raw={"data": {**raw["data"], "dedupe": "off"}}))
    assert len(kept.duplicates) == 1 and any(f.endswith("copy of 000.png") for f in kept.subsets["val"].files)


# --------------------------------------------------------------------------- cache, class weights


def test_cache_auto_uses_memory_under_a_quarter_of_ram_and_disk_above(tmp_path, monkeypatch):
    from imgcls.data import plan

    monkeypatch.setattr(plan, "total_memory", lambda: 4 * 100 * 32 * 32 * 3)
    assert choose_cache("auto", 100, (32, 32), 3, tmp_path).mode == "memory"
    disk = choose_cache("auto", 101, (32, 32), 3, tmp_path)
    assert disk.mode == "disk" and disk.estimate_bytes == 101 * 32 * 32 * 3 and disk.folder == tmp_path / "tfdata"
    assert "a quarter of RAM" in str(disk)
    assert choose_cache("none", 10**9, (32, 32), 3, tmp_path).mode == "none"


def test_disk_cache_is_written_once_and_read_back(tiny_data):
    config = load_config(raw={"data": {"dir": str(tiny_data), "image_size": 8, "cache": "disk"}})
    plan = plan_data(config)
    first = [x.numpy().sum() for x, _ in make_datasets(plan, config).val]
    cache = plan.cache.folder
    assert any(p.name.endswith(".index") for p in cache.iterdir())
    again = make_datasets(plan_data(config), config)
    assert [x.numpy().sum() for x, _ in again.val] == first


def test_class_weight_balanced_and_mapping():
    labels = np.array([0] * 30 + [1] * 10)
    assert class_weights("balanced", ["cat", "dog"], labels) == {0: pytest.approx(40 / 60), 1: 2.0}
    assert class_weights({"dog": 3.0}, ["cat", "dog"], labels) == {0: 1.0, 1: 3.0}
    assert class_weights(None, ["cat", "dog"], labels) is None
    with pytest.raises(ImgclsError, match=r"train.class_weight: unknown class\(es\) \['dgo'\]"):
        class_weights({"dgo": 2.0}, ["cat", "dog"], labels)
