"""Streaming per-neuron Pearson statistics, merged batch by batch on device.

Why not plain sums: responses can sit far from zero (raw fluorescence around 1e4) with a small
spread; a float32 sum of squares then loses every significant digit of the variance. Each
neuron gets a fixed shift (one of its own values) and a running mean relative to it; a batch
is summed as v - k with k = shift + mean (small numbers), turned into a centered batch
summary, and merged into the running summary with Chan's pairwise formula. One data pass
per batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sensorium_jax.metrics.passes import masked_moment_sums


class CorrelationStats(NamedTuple):
    """Centered running moments per neuron (all float32 [N]).

    Means are stored relative to a per-neuron shift (an exact data value fixed when the neuron
    is first seen), so they keep full float32 precision even on a large offset; the actual mean
    is `shift_x + mean_x` (see `response_mean`).
    """

    count: jax.Array  # entries seen
    mean_x: jax.Array  # mean of responses minus shift_x
    mean_y: jax.Array  # mean of predictions minus shift_y
    m2_x: jax.Array  # sum of squared deviations of responses
    m2_y: jax.Array  # sum of squared deviations of predictions
    c_xy: jax.Array  # sum of co-deviations
    shift_x: jax.Array  # reference value of responses
    shift_y: jax.Array  # reference value of predictions

    @property
    def response_mean(self) -> jax.Array:
        return self.shift_x + self.mean_x

    @property
    def prediction_mean(self) -> jax.Array:
        return self.shift_y + self.mean_y


def init_correlation_stats(n_neurons: int) -> CorrelationStats:
    """Empty statistics for `n_neurons` neurons."""
    zeros = lambda: jnp.zeros((n_neurons,), jnp.float32)  # noqa: E731
    return CorrelationStats(*(zeros() for _ in range(8)))


def frame_mask(lengths: np.ndarray | jax.Array, n_frames: int, burn_in: int = 0) -> jax.Array:
    """[B, T] bool: frame t of trial b counts iff burn_in <= t < lengths[b]."""
    t = jnp.arange(n_frames)[None, :]
    lengths = jnp.asarray(lengths)[:, None]
    return (t >= burn_in) & (t < lengths)


def full_mask(mask: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Broadcasts a [B, T] frame mask or a [B, T, N] entry mask to [B, T, N]."""
    if mask.ndim == len(shape) - 1:
        mask = mask[..., None]
    return jnp.broadcast_to(mask, shape)


def first_valid(values: jax.Array, mask: jax.Array) -> jax.Array:
    """[N]: per neuron, the first counted entry (0 where none); an exact data value."""
    n = values.shape[-1]
    if mask.ndim == 2:  # one frame mask for all neurons: one row to pick
        flat = mask.reshape(-1)
        row = values.reshape(-1, n)[jnp.argmax(flat)]
        return jnp.where(flat.any(), row, 0.0)
    flat_mask = mask.reshape(-1, n)
    index = jnp.argmax(flat_mask, axis=0)
    picked = jnp.take_along_axis(values.reshape(-1, n), index[None], axis=0)[0]
    return jnp.where(flat_mask.any(axis=0), picked, 0.0)


SAMPLE_FRAMES = 8  # frames per trial used to center a neuron's first batch


def _reference(count, shift, mean, v, mask):
    """(shift, k): the neuron's fixed shift and this batch's centering value k ~ its mean.

    A fresh shift is one of the neuron's own values, so a constant neuron stays exactly
    constant (k == shift, every deviation exactly 0). A fresh center is the mean of
    (v - shift) over a few evenly spaced frames, so an outlying first value costs no
    precision, for O(B N) reads. k only has to be close to the data: v - k is then small
    and (nearly) exact, whatever the offset.
    """
    frames = np.unique(np.linspace(0, v.shape[1] - 1, SAMPLE_FRAMES).astype(int))
    sample_v = v[:, frames]
    sample_m = full_mask(mask[:, frames], sample_v.shape)
    seen = count > 0
    shift = jnp.where(seen, shift, first_valid(v, mask))
    n = sample_m.sum(axis=(0, 1)).astype(jnp.float32)
    total = jnp.where(sample_m, sample_v - shift, 0.0).sum(axis=(0, 1))
    center = jnp.where(n > 0, total / jnp.maximum(n, 1.0), 0.0)
    return shift, shift + jnp.where(seen, mean, center)


def _batch_summary(x, y, mask, shift_x, shift_y, kx, ky) -> CorrelationStats:
    """Centered summary of one batch, from one pass of sums of v - k (small numbers)."""
    if mask.ndim == 2:
        n = jnp.broadcast_to(mask.sum().astype(jnp.float32), shift_x.shape)
    else:
        n = mask.sum(axis=(0, 1)).astype(jnp.float32)
    rows = lambda v: v.reshape(-1, v.shape[-1])  # noqa: E731
    row_mask = mask.reshape(-1, 1) if mask.ndim == 2 else rows(mask)
    sx, sy, sxx, syy, sxy = masked_moment_sums(rows(x), rows(y), row_mask, kx, ky)
    inv = jnp.where(n > 0, 1.0 / jnp.maximum(n, 1.0), 0.0)
    mx, my = sx * inv, sy * inv
    return CorrelationStats(
        count=n,
        mean_x=(kx - shift_x) + mx,
        mean_y=(ky - shift_y) + my,
        m2_x=jnp.maximum(sxx - sx * mx, 0.0),
        m2_y=jnp.maximum(syy - sy * my, 0.0),
        c_xy=sxy - sx * my,
        shift_x=shift_x,
        shift_y=shift_y,
    )


def merge_correlation_stats(a: CorrelationStats, b: CorrelationStats) -> CorrelationStats:
    """Chan et al. pairwise merge of two centered summaries (exact in real arithmetic).

    The result keeps a's shift (b's where a is empty); equal shifts cost no rounding.
    """
    shift_x = jnp.where(a.count > 0, a.shift_x, b.shift_x)
    shift_y = jnp.where(a.count > 0, a.shift_y, b.shift_y)
    has_a, has_b = a.count > 0, b.count > 0
    # Means relative to the common shift; an empty side takes the other's mean (delta 0).
    b_mx = jnp.where(has_a, b.mean_x + (b.shift_x - shift_x), b.mean_x)
    b_my = jnp.where(has_a, b.mean_y + (b.shift_y - shift_y), b.mean_y)
    a_mx, a_my = jnp.where(has_a, a.mean_x, b_mx), jnp.where(has_a, a.mean_y, b_my)
    b_mx, b_my = jnp.where(has_b, b_mx, a_mx), jnp.where(has_b, b_my, a_my)
    n = a.count + b.count
    wb = jnp.where(n > 0, b.count / jnp.maximum(n, 1.0), 0.0)
    dx, dy = b_mx - a_mx, b_my - a_my
    cross = a.count * wb  # = n_a n_b / n
    return CorrelationStats(
        count=n,
        mean_x=a_mx + dx * wb,
        mean_y=a_my + dy * wb,
        m2_x=a.m2_x + b.m2_x + dx * dx * cross,
        m2_y=a.m2_y + b.m2_y + dy * dy * cross,
        c_xy=a.c_xy + b.c_xy + dx * dy * cross,
        shift_x=shift_x,
        shift_y=shift_y,
    )


@jax.jit
def update_correlation_stats(
    stats: CorrelationStats, responses: jax.Array, predictions: jax.Array, mask: jax.Array
) -> CorrelationStats:
    """Adds a batch: responses/predictions [B, T, N]; mask [B, T] or [B, T, N] (True counts).

    Masked entries may hold anything, NaN included. One fused pass over the batch.
    """
    x = responses.astype(jnp.float32)
    y = predictions.astype(jnp.float32)
    mask = mask.astype(bool)
    shift_x, kx = _reference(stats.count, stats.shift_x, stats.mean_x, x, mask)
    shift_y, ky = _reference(stats.count, stats.shift_y, stats.mean_y, y, mask)
    return merge_correlation_stats(stats, _batch_summary(x, y, mask, shift_x, shift_y, kx, ky))


def pearson(cov: jax.Array, var_x: jax.Array, var_y: jax.Array) -> jax.Array:
    """cov / sqrt(var_x var_y), 0 where either variance is zero; clipped to [-1, 1]."""
    ok = (var_x > 0) & (var_y > 0)
    denom = jnp.sqrt(jnp.where(ok, var_x, 1.0)) * jnp.sqrt(jnp.where(ok, var_y, 1.0))
    return jnp.where(ok, jnp.clip(cov / denom, -1.0, 1.0), 0.0)


@jax.jit
def correlation_from_stats(stats: CorrelationStats) -> jax.Array:
    """[N] Pearson correlation; a neuron with zero variance (or no data) gets 0, never NaN."""
    return pearson(stats.c_xy, stats.m2_x, stats.m2_y)
