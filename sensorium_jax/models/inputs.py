"""What a core sees: the video with behaviour and pupil center as constant maps, pooled.

Shared by every model that feeds a convolutional core from the pipeline's batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections

from sensorium_jax.data.card import DatasetCard


def input_channels(card: DatasetCard, inputs: ml_collections.ConfigDict) -> int:
    """Channels of `core_input`: the video, behaviour maps and pupil maps as `inputs` asks."""
    return 1 + card.behavior_dim * bool(inputs.behavior) + 2 * bool(inputs.pupil_center)


def map_scale(setting: str | float, first_kernel: int) -> float:
    """The factor of the constant behaviour and pupil maps; "auto": 1 / k^2 for a first k x k
    spatial kernel.

    Why: the maps are constant over the frame, so the first spatial kernel only ever applies the
    sum of its k^2 taps to them: k^2 redundant weights that Adam moves by ~lr each, all in step,
    and the maps are not centred (behaviour is x / std, ~5 for the pupil). Unscaled, their share
    of the first layer's input swings by ~k^2 * 5 * lr per step, swamps the video in the
    BatchNorm and stalls learning (measured: validation 0.06 vs 0.19 without behaviour after 150
    steps on the `small` preset); scaled by 1 / k^2 they move like a single weight.
    """
    return 1.0 / int(first_kernel) ** 2 if setting == "auto" else float(setting)


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
