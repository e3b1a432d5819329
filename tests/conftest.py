"""Shared fixtures: the tiny synthetic store is generated and converted once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sensorium_jax.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(path)  # subprocesses share the session's cache
    return path


@pytest.fixture(scope="session")
def tiny_store(cache_dir) -> Path:
    from sensorium_jax.data.datasets import synthetic_store

    return synthetic_store("tiny", seed=0, mice=0, cache_dir=str(cache_dir / "sensorium_jax"))


@pytest.fixture
def smoke_config(tiny_store):
    config = load_config(REPO / "configs" / "smoke.py")
    config.data.store = str(tiny_store)
    return config


@pytest.fixture(scope="session")
def trained_smoke_workdir(tiny_store, tmp_path_factory) -> Path:
    """A short smoke training run whose checkpoints evaluation and inference tests share."""
    from sensorium_jax.training.loop import train_and_evaluate

    config = load_config(REPO / "configs" / "smoke.py")
    config.data.store = str(tiny_store)
    config.train.steps = 20
    config.train.eval_every = 10
    workdir = tmp_path_factory.mktemp("smoke_run")
    train_and_evaluate(config, workdir)
    return workdir
