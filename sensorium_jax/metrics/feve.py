"""Streaming FEVE for static (image) data, SENSORIUM 2022 definition.

Per neuron, over the images shown at least twice (trials of images shown once are ignored):
  noise_var = mean over images of the within-image sample variance (ddof 1)
  total_var = sample variance (ddof 1) of all their single-trial responses
  FEV  = (total_var - noise_var) / total_var            (explainable variance fraction)
  FEVE = 1 - (MSE(prediction, single trial) - noise_var) / (total_var - noise_var)
Each image keeps sums relative to one of its own responses, so within-image variances are
computed from small deviations, never from float32 sums of squares of large values.

A neuron whose responses barely vary in the scored trials (total variance below
`SILENT_VARIANCE`, in the normalized units where a neuron's training responses have unit
scale) gets FEV and FEVE 0: its explainable variance is a difference of two near-zero numbers,
and one such neuron (silent in a test tier, FEV 0.9 on variance 1e-14) turned a tier's mean
FEVE into -1e11.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp


SILENT_VARIANCE = 1e-6


class FeveStats(NamedTuple):
    """Per-image shifted sums (float32) for responses [trials, N] of static data."""

    count: jax.Array  # [S] trials seen per image slot
    offset: jax.Array  # [S, N] image shift minus the global shift (a response of that image)
    sum_x: jax.Array  # [S, N] sum of (response - shift - offset)
    sumsq_x: jax.Array  # [S, N] sum of squares of the same deviations
    sq_err: jax.Array  # [S, N] sum of (response - prediction) ** 2
    shift: jax.Array  # [N] global shift (a response value)


class FeveResult(NamedTuple):
    """Per-neuron FEVE and explainable-variance fraction (float32 [N])."""

    feve: jax.Array
    fev: jax.Array


def init_feve_stats(n_images: int, n_neurons: int) -> FeveStats:
    """Empty statistics for `n_images` image slots."""
    zeros = lambda: jnp.zeros((n_images, n_neurons), jnp.float32)  # noqa: E731
    return FeveStats(
        count=jnp.zeros((n_images,), jnp.float32),
        offset=zeros(),
        sum_x=zeros(),
        sumsq_x=zeros(),
        sq_err=zeros(),
        shift=jnp.zeros((n_neurons,), jnp.float32),
    )


@partial(jax.jit, donate_argnums=0)
def update_feve_stats(
    stats: FeveStats,
    responses: jax.Array,
    predictions: jax.Array,
    image_slot: jax.Array,
    mask: jax.Array,
) -> FeveStats:
    """Adds trials [B, N] showing image `image_slot[b]`; mask [B] says which trials count."""
    x = responses.astype(jnp.float32)
    y = predictions.astype(jnp.float32)
    mask = mask.astype(bool)
    n_images = stats.count.shape[0]
    slot = jnp.where(mask, image_slot.astype(jnp.int32), n_images)  # out of range: dropped
    first = jnp.argmax(mask)
    shift = jnp.where((stats.count.sum() > 0) | ~mask.any(), stats.shift, x[first])
    rel = jnp.where(mask[:, None], x - shift, 0.0)
    candidate = stats.offset.at[slot].set(rel, mode="drop")
    offset = jnp.where(stats.count[:, None] > 0, stats.offset, candidate)
    d = jnp.where(mask[:, None], rel - offset.at[slot].get(mode="fill", fill_value=0.0), 0.0)
    err = jnp.where(mask[:, None], x - y, 0.0)
    return FeveStats(
        count=stats.count.at[slot].add(1.0, mode="drop"),
        offset=offset,
        sum_x=stats.sum_x.at[slot].add(d, mode="drop"),
        sumsq_x=stats.sumsq_x.at[slot].add(d * d, mode="drop"),
        sq_err=stats.sq_err.at[slot].add(err * err, mode="drop"),
        shift=shift,
    )


@jax.jit
def feve_from_stats(stats: FeveStats) -> FeveResult:
    """FEVE and FEV per neuron; zero total (explainable) variance gives FEV (FEVE) 0, not NaN."""
    n = stats.count[:, None]
    keep = n >= 2
    n_safe = jnp.maximum(n, 2.0)
    image_mean = stats.sum_x / n_safe  # relative to shift + offset
    within = jnp.where(keep, jnp.maximum(stats.sumsq_x - stats.sum_x * image_mean, 0.0), 0.0)
    n_images = jnp.maximum(keep.sum(), 1).astype(jnp.float32)
    noise_var = (within / (n_safe - 1.0)).sum(axis=0) / n_images
    n_trials = jnp.where(keep, n, 0.0).sum()
    mean_rel = jnp.where(keep, stats.offset + image_mean, 0.0)  # relative to global shift
    grand = (n * mean_rel).sum(axis=0) / jnp.maximum(n_trials, 1.0)
    between = jnp.where(keep, n * (mean_rel - grand) ** 2, 0.0).sum(axis=0)
    total_var = (within.sum(axis=0) + between) / jnp.maximum(n_trials - 1.0, 1.0)
    mse = jnp.where(keep, stats.sq_err, 0.0).sum(axis=0) / jnp.maximum(n_trials, 1.0)
    explainable = total_var - noise_var
    has_var = total_var > SILENT_VARIANCE
    ok = has_var & (explainable != 0)
    fev = jnp.where(has_var, explainable / jnp.where(has_var, total_var, 1.0), 0.0)
    feve = jnp.where(ok, 1.0 - (mse - noise_var) / jnp.where(ok, explainable, 1.0), 0.0)
    return FeveResult(feve=feve, fev=fev)
