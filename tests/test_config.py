"""The config: defaults, validation messages that name the key, overrides, and consistency checks."""

from __future__ import annotations

import pytest

from conftest import assert_user_error
from imgcls.config import Config, load_config
from imgcls.config.reference import render_defaults
from imgcls.errors import ImgclsError


def load(**raw_and_overrides):
    overrides = raw_and_overrides.pop("overrides", [])
    raw = {"data": {"dir": "data/x"}, **raw_and_overrides}
    return load_config(raw=raw, overrides=overrides)


def error_of(**kwargs) -> str:
    with pytest.raises(ImgclsError) as info:
        load(**kwargs)
    return str(info.value)


def test_only_the_data_folder_is_required():
    config = load()
    assert config.data.image_size == (224, 224)
    assert config.model.name == "simple_cnn"
    assert config.loss == "sparse_categorical_crossentropy"
    assert "data.dir: required key is missing" in str(pytest.raises(ImgclsError, load_config, raw={}).value)


def test_unknown_key_suggests_the_closest_valid_key():
    message = error_of(train={"epoch": 3})
    assert "train.epoch: unknown key; did you mean train.epochs?" in message


def test_unknown_nested_and_model_option_keys_are_named_with_their_path():
    assert "train.schedule.decay_stepz: unknown key; did you mean train.schedule.decay_steps?" in error_of(
        train={"schedule": {"name": "exponential_decay", "decay_stepz": 3}})
    assert "model.filterz: unknown key; did you mean model.filters?" in error_of(model={"filterz": [8]})
    assert "callbacks.early_stoping: unknown key; did you mean callbacks.early_stopping?" in error_of(
        callbacks={"early_stoping": {}})


@pytest.mark.parametrize("section, key, value, expected", [
    ("data", "validation_split", 1.5, "data.validation_split: Input should be less than 1 (got 1.5)"),
    ("data", "batch_size", 0, "data.batch_size: Input should be greater than or equal to 1 (got 0)"),
    ("data", "label_mode", "onehot", "data.label_mode: Input should be 'int', 'categorical' or 'binary'"),
    ("train", "epochs", "many", "train.epochs: Input should be a valid integer"),
    ("train", "optimizer", "adamm", "train.optimizer: Input should be 'adam', 'adamw', 'sgd' or 'rmsprop'"),
    ("runtime", "device", -1, "runtime.device: use auto | cpu | gpu | a GPU index (0, 1, ...) (got -1)"),
    ("runtime", "device", True, "runtime.device: use auto | cpu | gpu | a GPU index (0, 1, ...) (got 'true')"),
    ("runtime", "device", "tpu", "runtime.device: use auto | cpu | gpu | a GPU index (0, 1, ...) (got 'tpu')"),
])
def test_wrong_types_and_ranges_name_the_key_and_the_allowed_values(section, key, value, expected):
    assert expected in error_of(**{section: {key: value}})


def test_unknown_model_lists_the_registered_ones():
    message = error_of(model={"name": "vgg17"})
    assert "model.name: unknown model 'vgg17'; did you mean vgg16?" in message
    assert "celebs_cnn" in message and "simple_cnn" in message


def test_unknown_schedule_lists_the_allowed_ones():
    assert "cosine_decay" in error_of(train={"schedule": "cosine"})


def test_overrides_are_parsed_as_yaml_and_reach_any_key():
    config = load(overrides=["train.epochs=3", "data.batch_size=16", "data.image_size=[64, 48]",
                             "model.filters=[4, 8]", "train.schedule.name=cosine_decay"])
    assert config.train.epochs == 3 and config.data.batch_size == 16
    assert config.data.image_size == (64, 48)
    assert config.model.options["filters"] == [4, 8]
    assert config.train.schedule.name == "cosine_decay"


def test_override_without_equals_sign_is_explained():
    assert "expected key=value" in error_of(overrides=["train.epochs"])


def test_typo_in_an_override_gets_a_suggestion_too():
    assert "did you mean train.epochs?" in error_of(overrides=["train.epoch=3"])


def test_loss_is_derived_from_label_mode():
    assert load(data={"dir": "x", "label_mode": "categorical"}).loss == "categorical_crossentropy"
    assert load(data={"dir": "x", "label_mode": "binary"}).loss == "binary_crossentropy"
    assert load(data={"dir": "x", "label_mode": "int"}).loss == "sparse_categorical_crossentropy"


def test_a_loss_that_does_not_match_label_mode_is_an_error_with_the_fix():
    message = error_of(data={"dir": "x", "label_mode": "categorical"}, train={"loss": "sparse_categorical_crossentropy"})
    assert "train.loss" in message and "needs categorical_crossentropy" in message and "auto" in message


def test_label_smoothing_needs_one_hot_labels():
    assert "data.label_mode: categorical" in error_of(train={"label_smoothing": 0.1})
    load(data={"dir": "x", "label_mode": "categorical"}, train={"label_smoothing": 0.1})


def test_optimizer_options_that_do_nothing_are_rejected():
    assert "train.momentum" in error_of(train={"optimizer": "adam", "momentum": 0.9})
    assert "train.nesterov" in error_of(train={"optimizer": "rmsprop", "nesterov": True})
    load(train={"optimizer": "sgd", "momentum": 0.9, "nesterov": True})


def test_reduce_lr_on_plateau_cannot_fight_a_schedule():
    message = error_of(train={"schedule": "cosine_decay"}, callbacks={"reduce_lr_on_plateau": {"enabled": True}})
    assert "callbacks.reduce_lr_on_plateau" in message


def test_monitor_must_be_a_tracked_metric():
    assert "did you mean val_accuracy?" in error_of(callbacks={"checkpoint": {"monitor": "val_acc"}})


def test_model_options_per_block_lists_must_match_the_number_of_blocks():
    assert "pool needs one entry per block" in error_of(model={"filters": [8, 16], "pool": [True]})


def test_model_defaults_are_filled_into_the_resolved_config():
    options = load(model={"name": "vgg16"}).model.options
    assert options["width"] == 1.0 and options["head"] == "flatten"


def test_config_files_are_read_with_the_safe_loader(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ImgclsError, match="malformed YAML"):
        load_config(evil)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dir: x\n  image_size: [32, 32\n")
    with pytest.raises(ImgclsError, match=r"bad.yaml line \d+: malformed YAML"):
        load_config(bad)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ImgclsError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_reference_config_documents_every_key_and_loads_back(tmp_path):
    text = render_defaults()
    for section in ("data", "model", "train", "callbacks", "runtime"):
        for key in Config.model_fields[section].annotation.model_fields:
            assert f"  {key}:" in text, f"{section}.{key} missing from the reference config"
    path = tmp_path / "defaults.yaml"
    path.write_text(text.replace("dir: <required>", "dir: data/x"))
    assert load_config(path).data.image_size == (224, 224)


@pytest.mark.parametrize("value, expected", [(True, "memory"), (False, "none"), ("disk", "disk"), ("auto", "auto")])
def test_data_cache_takes_a_mode_and_the_old_booleans(value, expected):
    assert load(data={"dir": "x", "cache": value}).data.cache == expected
    assert "data.cache: Input should be 'auto', 'memory', 'disk' or 'none'" in error_of(data={"dir": "x", "cache": "ram"})


def test_class_weight_is_balanced_or_a_positive_mapping_with_text_class_names():
    assert load(train={"class_weight": "balanced"}).train.class_weight == "balanced"
    assert load(train={"class_weight": {0: 2, "Café": 0.5}}).train.class_weight == {"0": 2.0, "Café": 0.5}
    assert "train.class_weight: use balanced, or a mapping" in error_of(train={"class_weight": "balance"})
    assert "train.class_weight: every class weight must be greater than 0" in error_of(train={"class_weight": {"a": 0}})


def test_test_split_and_test_dir_exclude_each_other_and_leave_images_to_train():
    assert "data.test_split: not used when data.test_dir is set" in error_of(data={"dir": "x", "test_dir": "y", "test_split": 0.1})
    assert "leaves nothing to train on" in error_of(data={"dir": "x", "validation_split": 0.5, "test_split": 0.5})
    assert load(data={"dir": "x", "split": {"stratify": False}}).data.split.stratify is False


def test_a_section_key_written_at_the_top_level_says_which_section_it_belongs_to(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {dir: data}\nlabels: csv\n")
    assert_user_error(cli("config", config), "labels: unknown key; did you mean data.labels?")
