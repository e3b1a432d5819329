"""User-facing metrics, one value per neuron, computed by feeding the streaming kernels.

The batch size only trades host memory for calls; results do not depend on it beyond float32
rounding.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import jax.numpy as jnp
import numpy as np

from sensorium_jax.data.kinds import BURN_IN_FRAMES
from sensorium_jax.metrics.feve import feve_from_stats, init_feve_stats, update_feve_stats
from sensorium_jax.metrics.inputs import (
    TrialArrays,
    TrialPairs,
    batch_slots,
    static_batches,
    stimulus_slots,
)
from sensorium_jax.metrics.repeats import (
    correlation_to_average_from_stats,
    init_repeat_stats,
    update_repeat_stats,
)
from sensorium_jax.metrics.stats import (
    correlation_from_stats,
    init_correlation_stats,
    update_correlation_stats,
)


def single_trial_correlation(
    responses: TrialArrays, predictions: TrialArrays, burn_in: int = BURN_IN_FRAMES, batch_size: int = 8
) -> np.ndarray:
    """[N] Pearson over all (trial, frame) pairs after the burn-in; constant neurons get 0.

    responses/predictions: a list of [T_i, N] or stacked [trials, T, N] with NaN frames as padding.
    """
    pairs = TrialPairs(responses, predictions)
    stats = init_correlation_stats(pairs.n_neurons)
    for batch in pairs.batches(batch_size, burn_in):
        stats = update_correlation_stats(stats, batch.responses, batch.predictions, batch.mask)
    return np.asarray(correlation_from_stats(stats), np.float32)


def correlation_to_average(
    responses: TrialArrays,
    predictions: TrialArrays,
    stimulus_ids: Sequence[Hashable],
    burn_in: int = BURN_IN_FRAMES,
    batch_size: int = 8,
) -> np.ndarray:
    """[N] Pearson between repeat-averaged responses and predictions over (stimulus, frame).

    Trials with equal `stimulus_ids` repeat one stimulus; frames are matched by position after
    the burn-in, and each frame is averaged over the repeats that have it.
    """
    pairs = TrialPairs(responses, predictions)
    slots, n_stimuli = stimulus_slots(stimulus_ids, pairs.n_trials)
    stats = init_repeat_stats(n_stimuli, pairs.n_frames, pairs.n_neurons)
    for batch in pairs.batches(batch_size, burn_in):
        stats = update_repeat_stats(
            stats, batch.responses, batch.predictions, batch_slots(slots, batch.trials), batch.mask
        )
    return np.asarray(correlation_to_average_from_stats(stats), np.float32)


def static_single_trial_correlation(
    responses: np.ndarray, predictions: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """[N] Pearson over trials for static data [trials, N] (all-NaN trials are skipped)."""
    stats = init_correlation_stats(np.shape(responses)[-1])
    for batch in static_batches(responses, predictions, batch_size):
        stats = update_correlation_stats(
            stats, batch.responses[:, None], batch.predictions[:, None], batch.mask[:, None]
        )
    return np.asarray(correlation_from_stats(stats), np.float32)


def static_correlation_to_average(
    responses: np.ndarray,
    predictions: np.ndarray,
    image_ids: Sequence[Hashable],
    batch_size: int = 256,
) -> np.ndarray:
    """[N] Pearson over images between repeat-averaged responses and predictions."""
    slots, n_images = stimulus_slots(image_ids, np.shape(responses)[0])
    stats = init_repeat_stats(n_images, 1, np.shape(responses)[-1])
    for batch in static_batches(responses, predictions, batch_size):
        stats = update_repeat_stats(
            stats,
            batch.responses[:, None],
            batch.predictions[:, None],
            batch_slots(slots, batch.trials),
            batch.mask[:, None],
        )
    return np.asarray(correlation_to_average_from_stats(stats), np.float32)


def feve(
    responses: np.ndarray,
    predictions: np.ndarray,
    image_ids: Sequence[Hashable],
    threshold: float = 0.15,
    batch_size: int = 256,
    return_kept: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """FEVE [K] of the K neurons whose FEV >= threshold (SENSORIUM 2022, static data).

    Only images shown at least twice enter. With `return_kept`, also the bool [N] mask of
    the neurons kept, so values can be matched to neuron ids.
    """
    values, fev = feve_and_fev(responses, predictions, image_ids, batch_size)
    kept = fev >= threshold
    return (values[kept], kept) if return_kept else values[kept]


def feve_and_fev(
    responses: np.ndarray,
    predictions: np.ndarray,
    image_ids: Sequence[Hashable],
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """FEVE and FEV for every neuron (float32 [N] each), before any threshold."""
    slots, n_images = stimulus_slots(image_ids, np.shape(responses)[0])
    stats = init_feve_stats(n_images, np.shape(responses)[-1])
    for batch in static_batches(responses, predictions, batch_size):
        stats = update_feve_stats(
            stats, batch.responses, batch.predictions, batch_slots(slots, batch.trials), batch.mask
        )
    result = feve_from_stats(stats)
    return np.asarray(result.feve, np.float32), np.asarray(result.fev, np.float32)


def pooled_mean(per_neuron_values: Sequence[np.ndarray | jnp.ndarray]) -> float:
    """Mean over all neurons of all mice pooled (the leaderboard's average, not mean of means)."""
    values = [np.ravel(np.asarray(v, np.float64)) for v in per_neuron_values]
    pooled = np.concatenate(values) if values else np.zeros(0)
    if pooled.size == 0:
        raise ValueError("pooled_mean: no values")
    return float(pooled.mean())
