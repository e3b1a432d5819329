"""A trained model of this project as an atlas feature model, through the Predictor contract.

Its layers are the outputs of the shared core's modules (`Predictor.layer_outputs`: every
submodule's output in one eval-mode call), children before the module that holds them, then
each mouse's predicted responses (`predicted.<mouse>`). Feature maps are averaged over the
clip's frames. An image is shown as a steady clip; behaviour and pupil centre sit at their
training means (zero after normalisation). Per-mouse parts (readouts, shifters) are left out
of the shared layers: they see one mouse's neurons, not the stimulus.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp

from sensorium_jax.atlas.models import FeatureModel

PER_MOUSE_PARTS = ("readout", "shifter", "readouts", "output")


def depth_key(name: str) -> tuple[str, ...]:
    """Sort key putting a module's children (in index order) before the module itself."""
    parts = [part.zfill(6) if part.isdigit() else part for part in name.split(".")]
    return (*parts, "~")


def shared_layer(name: str, array: jax.Array) -> bool:
    """A core feature map ([B, T, H, W, C] or [B, H, W, C]), not a per-mouse part."""
    return jnp.ndim(array) >= 4 and not re.match(rf"^({'|'.join(PER_MOUSE_PARTS)})(\.|$)", name)


def from_workdir(path: str | Path, *, frames: int = 0) -> FeatureModel:
    """`sensorium_jax.load(path)` as a FeatureModel; `frames`: clip length (0: the model's own,
    or frames_lost + 16)."""
    import sensorium_jax

    predictor = sensorium_jax.load(path)
    card = predictor.card
    h, w = card.frame_shape
    t = frames or predictor.clip_length or predictor.frames_lost + 16
    names = tuple(card.names)

    def steady_inputs(images: jax.Array, mouse: int) -> dict:
        x = jnp.asarray(images, jnp.float32)
        if x.shape[1:] != (h, w):
            x = jax.image.resize(x, (x.shape[0], h, w), method="linear")
        video = jnp.broadcast_to(x[:, None], (x.shape[0], t, h, w))
        inputs = predictor.normalize_inputs(video, jnp.zeros((x.shape[0], t, card.behavior_dim)),
                                            jnp.zeros((x.shape[0], t, 2)), mouse)
        inputs["behavior"] = jnp.zeros_like(inputs["behavior"])
        inputs["pupil_center"] = jnp.zeros_like(inputs["pupil_center"])
        return inputs

    def features(variables, images):
        outputs = predictor.layer_outputs(variables, steady_inputs(images, 0))
        shared = sorted((name for name, array in outputs.items() if shared_layer(name, array)), key=depth_key)
        out = {f"core:{name}": outputs[name].mean(axis=1) if outputs[name].ndim == 5 else outputs[name]
               for name in shared}
        for m, name in enumerate(names):
            pred = predictor.apply(variables, steady_inputs(images, m))  # [B, T_out, Nmax]
            out[f"predicted.{name}"] = pred.mean(axis=1)[:, : card.mice[m].n_neurons]
        return out

    probe = features(predictor.variables, jnp.zeros((1, h, w)))
    layers = tuple(probe)
    return FeatureModel(f"trained:{Path(path).name}", predictor.variables, features, layers,
                        {"workdir": str(path), "clip_frames": int(t),
                         "layers": "core module outputs (frame mean), then predicted responses per mouse"})
