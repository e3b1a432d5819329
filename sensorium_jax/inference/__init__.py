"""Inference from checkpoints: `model = sensorium_jax.load(path)`; `model.predict(...)`.

A checkpoint carries its config and dataset card, so no training data is needed. Inputs are
raw recordings (video 0-255, behaviour and pupil center in recorded units) unless told
they are already normalized; outputs are responses in the normalized units the metrics use,
or in recorded units with `raw_units=True`. `predictor.apply(predictor.variables, inputs)` is
the pure function underneath, for gradients with respect to the stimulus.
"""

from __future__ import annotations

from pathlib import Path

from sensorium_jax.inference.checkpoint import (
    Variables,
    read_checkpoint_meta,
    resolve_checkpoint,
    restore_for_inference,
)
from sensorium_jax.inference.ensemble import EnsemblePredictor
from sensorium_jax.inference.inputs import pipeline_inputs
from sensorium_jax.inference.predictor import Predictor

__all__ = ["EnsemblePredictor", "Predictor", "Variables", "load", "pipeline_inputs", "read_checkpoint_meta",
           "resolve_checkpoint"]


def load(path: str | Path) -> Predictor:
    """A trained model from a workdir or checkpoint folder (relative or absolute), without the
    training data and without the optimizer's state."""
    restored = restore_for_inference(path)
    return Predictor(restored.config, restored.card, restored.variables["params"], restored.variables["rest"],
                     restored.graphdef, source=str(restored.checkpoint))
