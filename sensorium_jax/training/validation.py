"""Whole-trial predictions of a tier and the validation score built on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax
import numpy as np

from sensorium_jax import metrics
from sensorium_jax.data.pipeline import make_eval_batches
from sensorium_jax.models.windows import predict_frames
from sensorium_jax.training.mesh import global_batch, local_slice, padded_size


def _pad_examples(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Repeats the last example so every batch has the compiled size."""
    count = next(iter(batch.values())).shape[0]
    if count == size:
        return batch
    index = np.concatenate([np.arange(count), np.full(size - count, count - 1)])
    return {key: value[index] for key, value in batch.items()}


def predict_tier(
    predict: Callable[[dict], jax.Array],
    store,
    mouse: str,
    tier: str,
    batch_size: int,
    mesh: jax.sharding.Mesh,
    *,
    frames_lost: int = 0,
    clip_length: int | None = None,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Yields (batch, predictions [B, T, N]) for every trial of a tier of one mouse.

    Predictions cover the whole (padded) trial, in windows for models with a fixed
    `clip_length`; frames a model cannot predict (those lost to its temporal receptive field)
    are NaN, so callers mask them like padding.
    """
    n_neurons = store.meta(mouse).n_neurons
    compiled_size = padded_size(batch_size)

    def forward(clip: dict[str, np.ndarray]) -> np.ndarray:
        local = {key: value[local_slice(compiled_size)] for key, value in clip.items()}
        return np.asarray(predict(global_batch(local, mesh)))

    for batch in make_eval_batches(store, mouse, tier, batch_size):
        count = batch["mouse"].shape[0]
        padded = _pad_examples(batch, compiled_size)
        full = predict_frames(forward, padded, frames_lost=frames_lost, clip_length=clip_length, pad_start=False)
        yield batch, full[:count, :, :n_neurons]


def scored_frame_mask(batch: dict[str, np.ndarray], predictions: np.ndarray, burn_in: int) -> np.ndarray:
    """Frames that count: valid, after the burn-in, and predicted by the model."""
    frames = batch["frame_mask"].shape[1]
    after_burn_in = np.arange(frames)[None, :] >= burn_in
    predicted = ~np.isnan(predictions[..., 0])
    return batch["frame_mask"].astype(bool) & after_burn_in & predicted


def single_trial_score(
    predict: Callable[[dict], jax.Array],
    store,
    mice: tuple[str, ...],
    tier: str,
    batch_size: int,
    burn_in: int,
    mesh: jax.sharding.Mesh,
    *,
    frames_lost: int = 0,
    clip_length: int | None = None,
) -> tuple[float, dict[str, float]]:
    """Single-trial correlation per mouse and pooled over all neurons of all mice."""
    per_mouse: dict[str, np.ndarray] = {}
    for mouse in mice:
        n_neurons = store.meta(mouse).n_neurons
        stats = metrics.init_correlation_stats(n_neurons)
        for batch, predictions in predict_tier(
            predict, store, mouse, tier, batch_size, mesh, frames_lost=frames_lost, clip_length=clip_length
        ):
            mask = scored_frame_mask(batch, predictions, burn_in)
            responses = batch["responses"][..., :n_neurons]
            stats = metrics.update_correlation_stats(
                stats, np.nan_to_num(responses), np.nan_to_num(predictions), mask
            )
        per_mouse[mouse] = np.asarray(metrics.correlation_from_stats(stats))
    pooled = float(np.concatenate(list(per_mouse.values())).mean())
    return pooled, {mouse: float(values.mean()) for mouse, values in per_mouse.items()}
