"""Where a core's feature map lies on the screen, so readout positions can be given in pixels.

A readout grid position (x, y) in [-1, 1] addresses the core's feature map (-1 and +1 are the
centres of its first and last pixel, see `readouts`). The feature map is the screen pooled by
`input_pool` and then cropped ("VALID") or kept ("SAME") by each stride-1 spatial convolution
of the core; each core lists those convolutions and this module does the arithmetic once.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from sensorium_jax.models.kernels import padding_pairs

SpatialLayer = tuple[int, str]  # (kernel width, "VALID" | "SAME") of a stride-1 convolution


def feature_map_placement(height: int, width: int, layers: Sequence[SpatialLayer]) -> tuple[float, int, int]:
    """(offset, H', W'): a `height` x `width` input through `layers` gives an H' x W' map whose
    pixel i is centred on input pixel i + offset (per axis; square kernels)."""
    offset = 0.0
    for kernel, padding in layers:
        before, after = padding_pairs(int(kernel), padding)
        height += before + after - (int(kernel) - 1)
        width += before + after - (int(kernel) - 1)
        offset += (int(kernel) - 1) / 2 - before
    return offset, height, width


def grid_to_pixels(
    grid: jax.Array, frame_shape: tuple[int, int], input_pool: int, layers: Sequence[SpatialLayer]
) -> jax.Array:
    """Readout grid positions [..., 2] (x, y in [-1, 1] over the feature map) -> screen pixels
    [..., 2] (x, y; pixel centres at integers) of a `frame_shape` screen."""
    pool = int(input_pool)
    h, w = frame_shape
    offset, fh, fw = feature_map_placement(h // pool, w // pool, layers)
    grid = jnp.asarray(grid, jnp.float32)
    x = offset + (grid[..., 0] + 1) / 2 * (fw - 1)
    y = offset + (grid[..., 1] + 1) / 2 * (fh - 1)
    return jnp.stack([(x + 0.5) * pool - 0.5, (y + 0.5) * pool - 0.5], axis=-1)
