"""A trained model of this project as an atlas feature model, through the Predictor contract.

The Predictor exposes the model's predicted responses, not its core's intermediate layers,
so a trained model contributes one layer per mouse it was trained on (`predicted.<mouse>`:
the predicted responses of that mouse's neurons, time-averaged). An image is shown as a steady
clip; behaviour and pupil centre sit at their training means (zero after normalisation).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sensorium_jax.atlas.models import FeatureModel


def from_workdir(path: str | Path, *, frames: int = 0) -> FeatureModel:
    """`sensorium_jax.load(path)` as a FeatureModel; `frames`: clip length (0: the model's own,
    or frames_lost + 16)."""
    import sensorium_jax

    predictor = sensorium_jax.load(path)
    card = predictor.card
    h, w = card.frame_shape
    t = frames or predictor.clip_length or predictor.frames_lost + 16
    names = tuple(card.names)
    layers = tuple(f"predicted.{name}" for name in names)

    def features(variables, images):
        x = jnp.asarray(images, jnp.float32)
        if x.shape[1:] != (h, w):
            x = jax.image.resize(x, (x.shape[0], h, w), method="linear")
        video = jnp.broadcast_to(x[:, None], (x.shape[0], t, h, w))
        out = {}
        for m, (name, layer) in enumerate(zip(names, layers)):
            b = card.behavior_dim
            inputs = predictor.normalize_inputs(video, jnp.zeros((x.shape[0], t, b)), jnp.zeros((x.shape[0], t, 2)), m)
            inputs["behavior"] = jnp.zeros_like(inputs["behavior"])
            inputs["pupil_center"] = jnp.zeros_like(inputs["pupil_center"])
            pred = predictor.apply(variables, inputs)  # [B, T_out, Nmax]
            out[layer] = pred.mean(axis=1)[:, : card.mice[m].n_neurons]
        return out

    return FeatureModel(f"trained:{Path(path).name}", predictor.variables, features, layers,
                        {"workdir": str(path), "clip_frames": int(t), "layers": "predicted responses per mouse"})
