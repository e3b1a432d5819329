"""DwiseNeuro (first place of SENSORIUM 2023) as an NNX module, from the paper and the
first-place code (github.com/lRomul/sensorium).

Layout of the network (every number comes from the config):

- input: a fixed-length clip of `clip_length` frames, split into `temporal_stride` phases (phase
  p holds frames p, p + stride, ...: the reference's 16-frame windows at step 2); each phase is
  a sample of its own for the core, and the phases' predictions are interleaved again, so every
  frame is predicted from its own inputs. Frames are zero padded (centred) to `frame_size`;
  behaviour and pupil center join the video as constant maps (5 channels with 2 behaviour
  dimensions), spatially mixed where CutMix pasted a partner's box;
- core: a 1x1x1 stem conv + BatchNorm, then factorized inverted-residual blocks (3D sinusoidal
  positional encoding, 1x1x1 expansion, depthwise (1, 3, 3) spatial and (5, 1, 1) temporal
  convolutions, squeeze-excitation, 1x1x1 projection, DropPath, a parameter-free shortcut
  followed by BatchNorm), and a spatial global average pool -> [B, T', C];
- cortex: grouped 1x1 linear layers widening the features (BatchNorm, SiLU, channel shuffle,
  channel-repeating shortcut + BatchNorm, stochastic depth);
- readout per mouse: dropout, a grouped 1x1 linear layer to the mouse's neurons, softplus with
  a small beta.

The core is not causal: temporal convolutions are zero padded and keep the length, so every
frame of the clip gets a prediction (`frames_lost` is 0). Whole trials are predicted in windows
(`window_inference`, see `sensorium_jax.models.windows`).
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
from sensorium_jax.models.windows import window_rule

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
            "clip_length": 32,  # fixed input length in frames (a multiple of temporal_stride)
            # The clip is split into this many phases of every stride-th frame (32 -> 2 x 16
            # steps), each run through the network as its own sample.
            "temporal_stride": 2,
            # How whole trials are predicted by `Predictor` and evaluate.py: "stride1_mean"
            # (every window start, overlapping predictions averaged: the reference's
            # inference) or "centred" (about half-overlapping windows, each frame from the
            # window it sits most centrally in: ~clip_length / 2 times fewer forward passes).
            "window_inference": "stride1_mean",
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
                # "next": block i maps channels[i] -> channels[i + 1] (the last keeps its
                # width; the stem must give channels[0]), as the reference code builds them;
                # "own": block i maps the previous block's width to channels[i].
                "layout": "next",
                # BatchNorm on every block's shortcut (the reference's; False: none).
                "shortcut_norm": True,
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
                # True: a BatchNorm on the channel-repeated shortcut (the reference's);
                # False: the bare parameter-free shortcut.
                "shortcut_norm": True,
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
        if self.fixed_length % self.temporal_stride:
            raise ValueError(f"clip_length {self.fixed_length} is not a multiple of temporal_stride "
                             f"{self.temporal_stride}")
        window_rule(config)  # refuses an unknown rule when the model is built, not at inference
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

    @property
    def input_canvas(self) -> tuple[int, int]:
        """Frames are zero padded (centred) to `frame_size`: CutMix draws its box there."""
        return self.frame_size

    def frames_lost(self) -> int:
        """Every frame of a clip gets a prediction."""
        return 0

    def readout_positions(self) -> base.ReadoutPositions:
        return base.ReadoutPositions(None, NO_POSITIONS)

    def _inputs(self, batch: base.Batch) -> jax.Array:
        """[stride * B, T / stride, *frame_size, C]: the clip's phases as samples, the video zero
        padded (centred), the constant maps over the whole padded frame (the CutMix partner's
        maps inside the pasted box, where the batch has one)."""
        video = jnp.asarray(batch["video"])
        h, w = video.shape[2:4]
        ph, pw = self.frame_size[0] - h, self.frame_size[1] - w
        if ph < 0 or pw < 0:
            raise ValueError(f"frames of {h}x{w} do not fit frame_size {self.frame_size}")
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        padded = {"video": jnp.pad(video, ((0, 0), (0, 0), *pads, (0, 0)))}
        keys = ("behavior", "pupil_center")
        padded.update({k: jnp.asarray(batch[k]) for k in keys if k in batch})
        x = core_input(padded, self.use_behavior, self.use_pupil, self.map_scale)
        if CUTMIX_BOX in batch and x.shape[-1] > 1:
            x = paste_partner_maps(x, batch, self._canvas_box(batch[CUTMIX_BOX], pads), self.map_scale,
                                   self.use_behavior, self.use_pupil)
        return to_phases(x, self.temporal_stride)

    def _canvas_box(self, box: jax.Array, pads: tuple) -> jax.Array:
        """CutMix's box [B, H, W] on the padded frame: as is when drawn on `frame_size`, else
        padded like the video."""
        if tuple(box.shape[1:]) == self.frame_size:
            return box
        return jnp.pad(box, ((0, 0), *pads))

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        frames = batch["video"].shape[1]
        if frames != self.fixed_length:
            raise ValueError(f"DwiseNeuro takes clips of exactly {self.fixed_length} frames, got {frames}")
        mouse = jnp.tile(jnp.asarray(batch["mouse"], jnp.int32), self.temporal_stride)
        features = self.cortex(self.core(self._inputs(batch), train=train), train=train)  # [s * B, T', C]
        return from_phases(self.readout(features, mouse, train=train), self.temporal_stride)

    def every_mouse_predictions(self, batch: base.Batch, mice: int, train: bool = False) -> jax.Array:
        """One core pass, then every mouse's readout (the readouts already read all mice)."""
        frames = batch["video"].shape[1]
        if frames != self.fixed_length:
            raise ValueError(f"DwiseNeuro takes clips of exactly {self.fixed_length} frames, got {frames}")
        if mice != self.readout.n_mice:
            raise ValueError(f"the model reads {self.readout.n_mice} mice, asked for {mice}")
        features = self.cortex(self.core(self._inputs(batch), train=train), train=train)
        every = self.readout.every_mouse(features, train=train)  # [s * B, T', M, Nmax]
        return jnp.moveaxis(from_phases(every, self.temporal_stride), 2, 0)


CUTMIX_BOX = "cutmix_box"  # see sensorium_jax.training.augment.cutmix


def to_phases(x: jax.Array, stride: int) -> jax.Array:
    """[B, T, ...] -> [stride * B, T / stride, ...]: sample p * B + b holds frames p, p + stride,
    ... of clip b."""
    b, t = x.shape[:2]
    x = x.reshape(b, t // stride, stride, *x.shape[2:])
    return jnp.moveaxis(x, 2, 0).reshape(stride * b, t // stride, *x.shape[3:])


def from_phases(y: jax.Array, stride: int) -> jax.Array:
    """Inverse of `to_phases`: [stride * B, T', ...] -> [B, T' * stride, ...]."""
    sb, t = y.shape[:2]
    y = y.reshape(stride, sb // stride, t, *y.shape[2:])
    return jnp.moveaxis(y, 0, 2).reshape(sb // stride, t * stride, *y.shape[3:])


def paste_partner_maps(x: jax.Array, batch: base.Batch, box: jax.Array, scale: float, behavior: bool,
                       pupil: bool) -> jax.Array:
    """The behaviour and pupil maps of [B, T, H, W, C] replaced by the CutMix partner's inside
    `box` [B, H, W] (the reference cuts all input channels with one box)."""
    partner = {"video": x[..., :1]}
    partner.update({k: batch[f"{k}_partner"] for k in ("behavior", "pupil_center") if f"{k}_partner" in batch})
    maps = core_input(partner, behavior, pupil, scale)[..., 1:]
    mixed = jnp.where(box[:, None, :, :, None], maps, x[..., 1:])
    return jnp.concatenate([x[..., :1], mixed], axis=-1)


Model = DwiseNeuroModel
