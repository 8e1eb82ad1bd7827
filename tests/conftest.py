"""Shared fixtures: tiny image folders the tests make themselves, and one trained run.

Images are 32x32 and models tiny, so the whole suite runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from imgcls.cli import app  # noqa: E402

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
TINY_MODEL = ["model.filters=[8, 16]", "model.dense=[16]"]


def make_image_folder(root: Path, classes=COLOURS, per_class: int = 12, size: int = 32, seed: int = 0) -> Path:
    """root/<class>/<i>.png: noisy solid colours, one colour per class (learnable in an epoch or two)."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def write_config(path: Path, data_dir: Path, **sections) -> Path:
    """A config file for `data_dir` with small, fast defaults; keyword args add sections."""
    config = {
        "data": {"dir": str(data_dir), "image_size": [32, 32], "batch_size": 8, "validation_split": 0.25},
        "model": {"name": "simple_cnn", "filters": [8, 16], "dense": [16]},
        "train": {"epochs": 2},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "colours")


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory, tiny_data) -> Path:
    return write_config(tmp_path_factory.mktemp("configs") / "tiny.yaml", tiny_data)


@pytest.fixture
def cli():
    """Run `imgcls ...` in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_config) -> Path:
    """One finished run, shared by the tests that only read artifacts."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(app, ["train", str(tiny_config), "--runs-dir", str(runs_dir), "--name", "tiny"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return (runs_dir / "latest").resolve()
