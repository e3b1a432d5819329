"""DwiseNeuro (first place of SENSORIUM 2023) as an NNX module, from the paper's description.

Layout of the network (every number comes from the config):

- input: a fixed-length clip of `clip_length` frames; every `temporal_stride`-th frame is kept
  and zero padded (centred) to `frame_size`; behaviour and pupil center join the video as
  constant maps (5 channels with 2 behaviour dimensions);
- core: a 1x1x1 stem conv + BatchNorm, then factorized inverted-residual blocks (3D sinusoidal
  positional encoding, 1x1x1 expansion, depthwise (1, 3, 3) spatial and (5, 1, 1) temporal
  convolutions, squeeze-excitation, 1x1x1 projection, DropPath, a parameter-free shortcut), and
  a spatial global average pool -> [B, T', C];
- cortex: grouped 1x1 linear layers widening the features (BatchNorm, SiLU, channel shuffle,
  channel-repeating shortcut with stochastic depth);
- readout per mouse: dropout, a grouped 1x1 linear layer to the mouse's neurons, softplus with
  a small beta.

The core is not causal: temporal convolutions are zero padded and keep the length, so every
frame of the clip gets a prediction (`frames_lost` is 0); each processed step is repeated
`temporal_stride` times to cover the frames it skipped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base
from sensorium_jax.models.dwiseneuro_blocks import Core
from sensorium_jax.models.dwiseneuro_heads import Cortex, MouseReadout
from sensorium_jax.models.inputs import core_input, input_channels, map_scale

NO_POSITIONS = ("DwiseNeuro reads out spatially averaged features: its readouts have no "
                "per-neuron screen positions")


def default_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration (the first-place solution of SENSORIUM 2023)."""
    return ml_collections.ConfigDict(
        {
            "name": "dwiseneuro",
            # Convolutions and linear layers run in this dtype; parameters and BatchNorm stay
            # float32.
            "compute_dtype": "float32",  # or "bfloat16"
            # How the depthwise convolutions run (see sensorium_jax.models.kernels): "native"
            # grouped convolutions, "folded" or "matmul" (shifted multiply-adds: the same sums,
            # faster on CPU) or "auto" (folded on CPU, else native).
            "kernels": "auto",
            "clip_length": 32,  # fixed input length in frames
            "temporal_stride": 2,  # every 2nd frame is processed (32 -> 16 steps)
            "frame_size": (64, 64),  # frames are zero padded (centred) to this size
            "bn_momentum": 0.9,  # flax convention (torch's momentum 0.1)
            "bn_epsilon": 1e-5,
            # Stochastic depth of the core blocks: block i of n drops its path with rate
            # drop_path_rate * i / n (0 for the first block, the full rate never reached).
            "drop_path_rate": 0.1,
            # Recompute each block's activations in the backward pass instead of storing them
            # (the expanded 6x maps dominate memory), ~1/3 more compute.
            "remat": False,
            "inputs": {"behavior": True, "pupil_center": True, "map_scale": 1.0},
            "stem": {"channels": 64},
            "blocks": {
                "channels": (64, 64, 64, 64, 128, 128, 128, 256, 256),
                "spatial_strides": (2, 1, 1, 1, 2, 1, 1, 2, 1),
                "expansion_ratio": 6,
                "spatial_kernel": 3,
                "temporal_kernel": 5,
                "se_reduce_ratio": 32,  # squeeze-excitation hidden = expanded channels // 32
                # Parameter-free shortcut when a block changes the size: "nearest"
                # interpolation or "average" pooling spatially; channels "tile"d (cyclic
                # repeat: c0, c1, ..., c0, c1, ...) or "interleave"d (c0, c0, c1, c1, ...).
                "shortcut_downsample": "nearest",
                "shortcut_repeat": "tile",
            },
            "cortex": {
                "channels": (1024, 2048, 4096),
                "groups": 2,
                "drop_path_rate": 0.1,  # stochastic depth of every cortex layer
                # False: the parameter-free shortcut the paper describes; True adds a
                # BatchNorm on the channel-repeated shortcut.
                "shortcut_norm": False,
                "shortcut_repeat": "tile",
            },
            "readout": {
                "groups": 2,
                "dropout": 0.4,
                # Drop whole feature channels over all time steps (the same channels for
                # every frame of a clip); False drops single entries.
                "channel_dropout": True,
                "softplus_beta": 0.07,
                "learn_beta": False,
            },
        }
    )


class DwiseNeuroModel(base.Model):
    """`model(batch, train)` -> positive rates [B, clip_length, Nmax] for a clip of exactly
    `clip_length` frames (every frame predicted: `frames_lost` is 0)."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "video":
            raise ValueError(f"DwiseNeuro needs video data, the card says {card.kind!r}")
        inputs = config.inputs
        self.fixed_length = int(config.clip_length)
        self.temporal_stride = int(config.temporal_stride)
        if self.fixed_length < 1 or self.temporal_stride < 1:
            raise ValueError("clip_length and temporal_stride must be positive")
        self.frame_size = tuple(int(s) for s in config.frame_size)
        h, w = card.frame_shape
        if h > self.frame_size[0] or w > self.frame_size[1]:
            raise ValueError(f"frames of {h}x{w} do not fit frame_size {self.frame_size}")
        self.use_behavior = bool(inputs.behavior)
        self.use_pupil = bool(inputs.pupil_center)
        self.map_scale = map_scale(inputs.map_scale, 1)  # "auto": 1, the stem is 1x1x1
        dt = jnp.dtype(config.compute_dtype)
        self.core = Core(input_channels(card, inputs), config, rngs=rngs)
        self.cortex = Cortex(self.core.out_channels, config, rngs=rngs)
        self.readout = MouseReadout(card, self.cortex.out_channels, config.readout, compute_dtype=dt, rngs=rngs)

    @property
    def clip_length(self) -> int:
        """The one clip length the core takes (`config.clip_length`)."""
        return self.fixed_length

    def frames_lost(self) -> int:
        """Every frame of a clip gets a prediction."""
        return 0

    def readout_positions(self) -> base.ReadoutPositions:
        return base.ReadoutPositions(None, NO_POSITIONS)

    def _inputs(self, batch: base.Batch) -> jax.Array:
        """[B, T / stride, *frame_size, C]: every stride-th frame, the video zero padded
        (centred), the constant maps over the whole padded frame."""
        keys = ("video", "behavior", "pupil_center")
        picked = {k: jnp.asarray(batch[k])[:, :: self.temporal_stride] for k in keys if k in batch}
        video = picked["video"]
        h, w = video.shape[2:4]
        ph, pw = self.frame_size[0] - h, self.frame_size[1] - w
        if ph < 0 or pw < 0:
            raise ValueError(f"frames of {h}x{w} do not fit frame_size {self.frame_size}")
        picked["video"] = jnp.pad(video, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        return core_input(picked, self.use_behavior, self.use_pupil, self.map_scale)

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        frames = batch["video"].shape[1]
        if frames != self.fixed_length:
            raise ValueError(f"DwiseNeuro takes clips of exactly {self.fixed_length} frames, got {frames}")
        features = self.cortex(self.core(self._inputs(batch), train=train), train=train)  # [B, T', C]
        rates = self.readout(features, jnp.asarray(batch["mouse"], jnp.int32), train=train)
        # Each processed step stands for the `temporal_stride` frames starting at it.
        return jnp.repeat(rates, self.temporal_stride, axis=1)[:, : self.fixed_length]


Model = DwiseNeuroModel
