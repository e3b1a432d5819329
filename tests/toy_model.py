"""A toy model written against the contract alone (`sensorium_jax.models.base.Model`): one
per-frame linear filter bank, ELU, and the shared Gaussian readout with its shifter.

Nothing in sensorium_jax names it: `config.model.name = "toy_model"` finds this module on the
import path (tests/ is on it under pytest; subprocesses get PYTHONPATH=tests).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base, kernels
from sensorium_jax.models.geometry import grid_to_pixels
from sensorium_jax.models.initializers import lecun_normal
from sensorium_jax.models.inputs import core_input, input_channels, map_scale, pool_frames
from sensorium_jax.models.readouts import readout_and_shifter


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": "toy_model",
            "channels": 4,
            "kernel": 5,  # one k x k filter bank, zero padded ("SAME")
            "input_pool": 2,
            "inputs": {"behavior": True, "pupil_center": False, "map_scale": "auto"},
            "readout": {
                "position_inputs": 2, "position_hidden": 8, "init_sigma": 0.1, "full_sigma": True,
                "neuron_chunk": None, "centered_positions": True,
            },
            "shifter": {"enabled": True, "hidden": (3,), "zero_init": True},
        }
    )


class ToyModel(base.Model):
    """Linear-nonlinear: [B, T, H, W] -> ELU(filters * frame) -> Gaussian readout -> ELU + 1."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        k, c = int(config.kernel), int(config.channels)
        self.use_behavior = bool(config.inputs.behavior)
        self.use_pupil = bool(config.inputs.pupil_center)
        self.map_scale = map_scale(config.inputs.map_scale, k)
        self.input_pool = int(config.input_pool)
        self.frame_shape = tuple(int(s) for s in card.frame_shape)
        self.kernel_size = k
        self.filters = nnx.Param(lecun_normal()(rngs.params(), (k, k, input_channels(card, config.inputs), c)))
        self.bias = nnx.Param(jnp.zeros((c,), jnp.float32))
        self.readout, self.shifter = readout_and_shifter(config, card, c, rngs)

    def frames_lost(self) -> int:
        return 0

    def readout_positions(self) -> base.ReadoutPositions:
        layers = ((self.kernel_size, "SAME"),)
        pixels = grid_to_pixels(self.readout.positions(), self.frame_shape, self.input_pool, layers)
        return base.ReadoutPositions(pixels)

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        x = pool_frames(core_input(batch, self.use_behavior, self.use_pupil, self.map_scale), self.input_pool)
        b, t = x.shape[:2]
        y = kernels.conv2d(x.reshape(b * t, *x.shape[2:]), self.filters[...])
        features = jax.nn.elu(y.reshape(b, t, *y.shape[1:]) + self.bias[...])
        mouse = jnp.asarray(batch["mouse"], jnp.int32)
        shift = self.shifter(jnp.asarray(batch["pupil_center"]), mouse) if self.shifter is not None else None
        return jax.nn.elu(self.readout(features, mouse, shift, train=train)) + 1.0


Model = ToyModel
