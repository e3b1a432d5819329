"""The SENSORIUM 2023 factorized baseline: factorized 3D core, Gaussian readout, shifter.

Behaviour (and optionally the pupil center) enters the core as constant input maps; the
per-mouse shifter moves every readout position by a function of the pupil center; the output
is ELU + 1 so rates stay positive. Predictions cover the last `frames_out(T)` frames of a clip.

Training adds `regularizer()`: the reference core's smoothness penalties on the first layer's
filters (`core.gamma_input_spatial`, `core.gamma_input_temporal`) and the readout's L1 on the
feature weights (`readout.gamma_readout`). Deviation: the reference trainer adds the core's
penalty to every mouse's batch objective, so a step over all M mice counts it M times; a
step over a mixed batch here counts it once (with `mouse_sampling="round"`, once per mouse as
the reference, but then every mouse's step also carries all readouts' L1, which is 0 by default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base
from sensorium_jax.models.cores import Factorized3dCore
from sensorium_jax.models.geometry import grid_to_pixels
from sensorium_jax.models.inputs import core_input, input_channels, map_scale, pool_frames
from sensorium_jax.models.readouts import readout_and_shifter


def default_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration of the factorized baseline (80 frames in -> 62 out)."""
    return ml_collections.ConfigDict(
        {
            "name": "factorized",
            # Core convolutions run in this dtype; parameters and BatchNorm stay float32.
            "compute_dtype": "float32",  # or "bfloat16"
            # How the convolutions run (see sensorium_jax.models.kernels): "native" 3D
            # convolutions, "folded" 2D ones (the same sums), "matmul" (folded, temporal ones as
            # matrix products of shifted frames: fastest on CPU for wide layers) or "auto"
            # (folded on CPU, else native).
            "kernels": "auto",
            "core": {
                "channels": (32, 64, 128),
                "spatial_kernels": (11, 5, 5),
                "temporal_kernels": (11, 5, 5),
                # flax convention: the running statistics keep this fraction per step (the
                # reference's BatchNorm momentum 0.7 in torch's convention; 0.9 before).
                "bn_momentum": 0.3,
                # Initialisation of both convolutions of every layer: "xavier_normal" (the
                # reference's) or "lecun_normal" (configs saved before the option).
                "conv_init": "xavier_normal",
                # Smoothness penalties of the first layer's filters (the reference's weights):
                # Laplace on the spatial filters, [-1, 4, -1] along the temporal ones, each
                # normalised by the filters' squared norm (see models/regularizers.py).
                "gamma_input_spatial": 10.0,
                "gamma_input_temporal": 0.01,
                # Spatial average pooling of the input frames: 2 quarters the cost and doubles
                # the receptive field in pixels (small CPU configs); 1 keeps full resolution.
                "input_pool": 1,
                # "VALID" (the baseline: each layer crops k - 1 pixels) or "SAME" (zero padding:
                # the feature map keeps the frame size, so RFs near the edges can be read).
                "spatial_padding": "VALID",
                # Recompute each layer's activations in the backward pass instead of storing
                # them (less memory for long clips and large batches, ~1/3 more compute).
                "remat": False,
            },
            "inputs": {
                "behavior": True,  # behaviour as extra constant input channels
                "pupil_center": False,  # pupil center as two more constant channels
                # Constant maps are multiplied by this before the first convolution; "auto":
                # 1 / k^2 for a first spatial kernel of k x k (see inputs.map_scale).
                "map_scale": "auto",
            },
            "readout": {
                "position_inputs": 2,  # cortical coordinates used: x, y (2) or x, y, z (3)
                "position_hidden": 30,
                "init_sigma": 0.1,
                "full_sigma": True,  # per-neuron 2x2 sigma; False: diagonal
                # Neurons per group in the sampling step; bounds its memory (None: all at once).
                "neuron_chunk": 1024,
                # Start every position at the screen centre, so the retinotopic map unfolds in
                # the data's orientation (a random start can lock in a mirrored map).
                "centered_positions": True,
                # L1 penalty on the feature weights (the reference's FullGaussian2d; 0 in the
                # SENSORIUM 2023 baseline).
                "gamma_readout": 0.0,
            },
            # zero_init: the last layer starts at 0, so no shift until one is learned (a random
            # MLP moves whole mice's positions by up to ~0.5 and can trap their readouts).
            "shifter": {"enabled": True, "hidden": (5, 5), "zero_init": True},
        }
    )


class FactorizedModel(base.Model):
    """`model(batch, train)` -> positive rates [B, T - frames_lost(), Nmax]."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "video":
            raise ValueError(f"the factorized model needs video data, the card says {card.kind!r}")
        cc, inputs = config.core, config.inputs
        self.use_behavior = bool(inputs.behavior)
        self.use_pupil = bool(inputs.pupil_center)
        self.input_pool = int(cc.input_pool)
        self.map_scale = map_scale(inputs.map_scale, cc.spatial_kernels[0])
        self.frame_shape = tuple(int(s) for s in card.frame_shape)
        self.core = Factorized3dCore(
            input_channels(card, inputs),
            tuple(cc.channels),
            tuple(cc.spatial_kernels),
            tuple(cc.temporal_kernels),
            compute_dtype=config.compute_dtype,
            kernels_impl=config.kernels,
            bn_momentum=cc.bn_momentum,
            spatial_padding=cc.spatial_padding,
            remat=bool(cc.remat),
            conv_init=cc.conv_init,
            gamma_input_spatial=float(cc.gamma_input_spatial),
            gamma_input_temporal=float(cc.gamma_input_temporal),
            rngs=rngs,
        )
        # assigned once: NNX makes an attribute first set to None static
        self.readout, self.shifter = readout_and_shifter(config, card, self.core.out_channels, rngs)

    def frames_lost(self) -> int:
        """Frames at the start of a clip that get no prediction (independent of the length)."""
        return self.core.frames_lost()

    def regularizer(self) -> jax.Array:
        """The core's smoothness penalties plus the readout's L1 penalty (the reference trainer
        adds the core's and the batch mouse's readout's to each mouse's loss)."""
        return self.core.regularizer() + self.readout.regularizer()

    def readout_positions(self) -> base.ReadoutPositions:
        """Mean readout positions in screen pixels, through the input pooling and the core's
        spatial convolutions."""
        grid = self.readout.positions()
        return base.ReadoutPositions(
            grid_to_pixels(grid, self.frame_shape, self.input_pool, self.core.spatial_layers())
        )

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        x = pool_frames(core_input(batch, self.use_behavior, self.use_pupil, self.map_scale), self.input_pool)
        t_out = self.frames_out(x.shape[1])
        if t_out < 1:
            raise ValueError(f"{x.shape[1]}-frame clips are too short: the core eats {self.frames_lost()}")
        features = self.core(x, train=train)
        mouse = jnp.asarray(batch["mouse"], jnp.int32)
        shift = None
        if self.shifter is not None:
            shift = self.shifter(jnp.asarray(batch["pupil_center"])[:, -t_out:], mouse)
        return jax.nn.elu(self.readout(features, mouse, shift, train=train)) + 1.0


Model = FactorizedModel
