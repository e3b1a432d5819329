"""Streaming correlation to average: repeat sums per (stimulus, frame, neuron) on device.

The average over repeats is nonlinear in the final Pearson, so the per-cell sums must be kept
(memory O(stimuli x frames x neurons)). Sums are taken relative to a per-neuron shift (an
actual data value from the first counted frame), so a large common offset cancels exactly
before summation; the final Pearson over cells is a centered two-pass computation.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sensorium_jax.metrics.passes import masked_moment_sums, scatter_shifted
from sensorium_jax.metrics.stats import first_valid, pearson


class RepeatStats(NamedTuple):
    """Per-cell sums of shifted responses/predictions and per-cell counts."""

    count: jax.Array  # float32 [S, T]: repeats seen per (stimulus slot, frame)
    sum_x: jax.Array  # float32 [S, T, N]: sum of (response - shift_x)
    sum_y: jax.Array  # float32 [S, T, N]: sum of (prediction - shift_y)
    shift_x: jax.Array  # float32 [N]
    shift_y: jax.Array  # float32 [N]


def init_repeat_stats(n_stimuli: int, n_frames: int, n_neurons: int) -> RepeatStats:
    """Empty statistics for `n_stimuli` stimulus slots of up to `n_frames` frames."""
    cells = (n_stimuli, n_frames, n_neurons)
    return RepeatStats(
        count=jnp.zeros(cells[:2], jnp.float32),
        sum_x=jnp.zeros(cells, jnp.float32),
        sum_y=jnp.zeros(cells, jnp.float32),
        shift_x=jnp.zeros((n_neurons,), jnp.float32),
        shift_y=jnp.zeros((n_neurons,), jnp.float32),
    )


@partial(jax.jit, donate_argnums=0)
def update_repeat_stats(
    stats: RepeatStats,
    responses: jax.Array,
    predictions: jax.Array,
    stimulus_slot: jax.Array,
    mask: jax.Array,
) -> RepeatStats:
    """Adds a batch [B, T, N] whose trial b shows stimulus `stimulus_slot[b]`; mask [B, T].

    T may be shorter than the stats' frame axis (frames are aligned from 0). The input stats
    are donated (updated in place): always use the returned value.
    """
    x = responses.astype(jnp.float32)
    y = predictions.astype(jnp.float32)
    mask = mask.astype(bool)
    n_frames = x.shape[1]
    started = stats.count.sum() > 0
    shift_x = jnp.where(started, stats.shift_x, first_valid(x, mask))
    shift_y = jnp.where(started, stats.shift_y, first_valid(y, mask))
    slot = stimulus_slot.astype(jnp.int32)
    sum_x, sum_y = scatter_shifted(stats.sum_x, stats.sum_y, x, y, slot, mask, shift_x, shift_y)
    return RepeatStats(
        count=stats.count.at[slot, :n_frames].add(mask.astype(jnp.float32)),
        sum_x=sum_x,
        sum_y=sum_y,
        shift_x=shift_x,
        shift_y=shift_y,
    )


@jax.jit
def correlation_to_average_from_stats(stats: RepeatStats) -> jax.Array:
    """[N] Pearson, over all cells seen at least once, between repeat-averaged responses and
    repeat-averaged predictions; zero variance gives 0.

    Two passes over the cells: their means, then sums of deviations from those means (with
    the usual correction by the residual first-order sums).
    """
    n_neurons = stats.sum_x.shape[-1]
    sum_x = stats.sum_x.reshape(-1, n_neurons)
    sum_y = stats.sum_y.reshape(-1, n_neurons)
    count = stats.count.reshape(-1, 1)
    seen = count > 0
    inv = jnp.where(seen, 1.0 / jnp.maximum(count, 1.0), 0.0)  # averages = sums * inv
    n = jnp.maximum(seen.sum(), 1).astype(jnp.float32)
    zero = jnp.zeros((n_neurons,), jnp.float32)
    first = masked_moment_sums(sum_x, sum_y, seen, zero, zero, scale=inv)
    mx, my = first[0] / n, first[1] / n
    sx, sy, sxx, syy, sxy = masked_moment_sums(sum_x, sum_y, seen, mx, my, scale=inv)
    return pearson(sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n)
