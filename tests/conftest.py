"""Shared fixtures: the tiny random Llama, the tiny assets, a prepared dataset and a trained adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tuneforge.core.config import load_pipeline

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(scope="session")
def tiny():
    from tuneforge.models import load

    return load("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_config():
    return load_pipeline(ASSETS / "pipeline.yaml")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_config):
    from tuneforge.data.prepare import prepare

    return prepare(tiny_config.data, tiny_config.model, tmp_path_factory.mktemp("ds") / "dataset")


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_config, tiny_dataset):
    from tuneforge.train.loop import train

    cfg = tiny_config.train.model_copy(update={"epochs": 6, "lr": 0.02})
    return train(tiny_dataset, tiny_config.model, cfg, tmp_path_factory.mktemp("ad") / "adapter")


@pytest.fixture
def assets(tmp_path) -> Path:
    """A writable copy of tests/assets."""
    target = tmp_path / "assets"
    shutil.copytree(ASSETS, target)
    return target
