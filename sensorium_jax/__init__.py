"""sensorium_jax: JAX/Flax digital twins of mouse visual cortex."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sensorium_jax import backend_flags as _backend_flags  # noqa: F401  (XLA flags before any backend starts)

__version__ = "0.1.0"

if TYPE_CHECKING:  # importing JAX and the models is left to the first `load`
    from pathlib import Path

    from sensorium_jax.inference import Predictor


def load(path: str | Path) -> Predictor:
    """`sensorium_jax.load(workdir_or_checkpoint)` -> a Predictor (see sensorium_jax.inference);
    relative paths are taken from the current folder."""
    from sensorium_jax.inference import load as _load

    return _load(path)
