"""The SENSORIUM 2023 factorized baseline: factorized 3D core, Gaussian readout, shifter.

Behaviour (and optionally the pupil center) enters the core as constant input maps; the
per-mouse shifter moves every readout position by a function of the pupil center; the output
is ELU + 1 so rates stay positive. Predictions cover the last `frames_out(T)` frames of a clip.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.cores import Factorized3dCore
from sensorium_jax.models.readouts import GaussianReadout
from sensorium_jax.models.registry import register_model
from sensorium_jax.models.shifter import MLPShifter


def factorized_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration of the factorized baseline (80 frames in -> 62 out)."""
    return ml_collections.ConfigDict(
        {
            "name": "factorized",
            # Core convolutions run in this dtype; parameters and BatchNorm stay float32.
            "compute_dtype": "float32",  # or "bfloat16"
            "core": {
                "channels": (32, 64, 128),
                "spatial_kernels": (11, 5, 5),
                "temporal_kernels": (11, 5, 5),
                "bn_momentum": 0.9,  # flax convention (torch's momentum 0.1)
                # "matmul": 2D spatial convolutions with frames folded into the batch, temporal
                # ones as matrix products of shifted frames (fastest on CPU for wide layers);
                # "folded2d": both as 2D convolutions; "3d": native 3D convolutions; "auto":
                # folded2d on CPU, else 3d.
                "conv_impl": "auto",
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
                # 1 / k^2 for a first spatial kernel of k x k (see FactorizedModel).
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
            },
            # zero_init: the last layer starts at 0, so no shift until one is learned (a random
            # MLP moves whole mice's positions by up to ~0.5 and can trap their readouts).
            "shifter": {"enabled": True, "hidden": (5, 5), "zero_init": True},
        }
    )


def core_input(
    batch: Mapping[str, jax.Array], behavior: bool, pupil_center: bool, map_scale: float = 1.0
) -> jax.Array:
    """[B, T, H, W, 1 + k + 2] : video, then behaviour and pupil center as constant maps
    (times `map_scale`)."""
    video = jnp.asarray(batch["video"], jnp.float32)
    parts = [video]
    b, t, h, w, _ = video.shape
    for key, used in (("behavior", behavior), ("pupil_center", pupil_center)):
        if used:
            v = jnp.asarray(batch[key], jnp.float32) * map_scale
            parts.append(jnp.broadcast_to(v[:, :, None, None, :], (b, t, h, w, v.shape[-1])))
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else video


def pool_frames(x: jax.Array, factor: int) -> jax.Array:
    """Average-pools [B, T, H, W, C] spatially by `factor` (edge pixels that do not fill a
    window are dropped)."""
    if factor == 1:
        return x
    b, t, h, w, c = x.shape
    h2, w2 = h // factor, w // factor
    x = x[:, :, : h2 * factor, : w2 * factor]
    return x.reshape(b, t, h2, factor, w2, factor, c).mean(axis=(3, 5))


def readout_and_shifter(
    config: ml_collections.ConfigDict, card: DatasetCard, in_channels: int, rngs: nnx.Rngs
) -> tuple[GaussianReadout, MLPShifter | None]:
    """The Gaussian readout and (if enabled) the shifter that `config.readout` and
    `config.shifter` describe; shared by every model with a Gaussian readout."""
    ro = config.readout
    readout = GaussianReadout(
        card,
        in_channels,
        position_inputs=ro.position_inputs,
        position_hidden=ro.position_hidden,
        init_sigma=ro.init_sigma,
        full_sigma=ro.full_sigma,
        neuron_chunk=ro.get("neuron_chunk"),
        centered_positions=bool(ro.get("centered_positions", False)),
        rngs=rngs,
    )
    shifter = None
    if config.shifter.enabled:
        shifter = MLPShifter(
            len(card.mice), tuple(config.shifter.hidden),
            zero_init=bool(config.shifter.get("zero_init", False)), rngs=rngs,
        )
    return readout, shifter


class FactorizedModel(nnx.Module):
    """`model(batch, train)` -> positive rates [B, T - frames_lost(T), Nmax]."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "video":
            raise ValueError(f"the factorized model needs video data, the card says {card.kind!r}")
        cc, inputs = config.core, config.inputs
        in_channels = 1 + card.behavior_dim * bool(inputs.behavior) + 2 * bool(inputs.pupil_center)
        self.use_behavior = bool(inputs.behavior)
        self.use_pupil = bool(inputs.pupil_center)
        self.input_pool = int(cc.get("input_pool", 1))
        # Behaviour and pupil maps are constant over the frame, so the first spatial kernel
        # only ever applies the sum of its k^2 taps to them: k^2 redundant weights that Adam
        # moves by ~lr each, all in step, and the maps are not centred (behaviour is x / std,
        # ~5 for the pupil). Unscaled, their share of the first layer's input swings by
        # ~k^2 * 5 * lr per step, swamps the video in the BatchNorm and stalls learning
        # (measured: validation 0.06 vs 0.19 without behaviour after 150 steps on the `small`
        # preset); scaled by 1 / k^2 they move like a single weight.
        scale = inputs.get("map_scale", "auto")
        self.map_scale = 1.0 / cc.spatial_kernels[0] ** 2 if scale == "auto" else float(scale)
        self.core = Factorized3dCore(
            in_channels,
            tuple(cc.channels),
            tuple(cc.spatial_kernels),
            tuple(cc.temporal_kernels),
            compute_dtype=config.compute_dtype,
            conv_impl=cc.conv_impl,
            bn_momentum=cc.bn_momentum,
            spatial_padding=cc.get("spatial_padding", "VALID"),
            remat=bool(cc.get("remat", False)),
            rngs=rngs,
        )
        # assigned once: NNX makes an attribute first set to None static
        self.readout, self.shifter = readout_and_shifter(config, card, self.core.out_channels, rngs)

    def frames_lost(self, frames: int | None = None) -> int:
        """Frames at the start of a clip that get no prediction (independent of the length)."""
        return self.core.frames_lost()

    def frames_out(self, frames: int) -> int:
        return frames - self.frames_lost(frames)

    def __call__(self, batch: Mapping[str, jax.Array], train: bool = False) -> jax.Array:
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


@register_model("factorized", default_config=factorized_config)
def build_factorized(config: ml_collections.ConfigDict, card: DatasetCard, rngs: nnx.Rngs) -> FactorizedModel:
    return FactorizedModel(config, card, rngs=rngs)
