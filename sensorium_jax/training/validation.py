"""The trainer's validation: its sharded predict step as a predictor, scored by the tier loop.

Validation and evaluate.py share the evaluators and `evaluation.scoring.score_tier`; only the
predictor differs. Every process runs the same loop over all trials (each process forwards its
share of every batch, the predictions come back replicated), so all get the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax
import numpy as np

from sensorium_jax.data.pipeline import make_eval_batches
from sensorium_jax.evaluation.evaluators import get_evaluator
from sensorium_jax.evaluation.scoring import score_tier, scored_frame_mask
from sensorium_jax.models.windows import predict_frames
from sensorium_jax.training.mesh import global_batch, local_slice, padded_size

__all__ = ["ShardedPredictor", "predict_tier", "scored_frame_mask", "validation_score"]


def _pad_examples(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Repeats the last example so every batch has the compiled size."""
    count = next(iter(batch.values())).shape[0]
    if count == size:
        return batch
    index = np.concatenate([np.arange(count), np.full(size - count, count - 1)])
    return {key: value[index] for key, value in batch.items()}


class ShardedPredictor:
    """`predict_normalized(batch)` over a replicated predict step on the data mesh.

    Whole trials are predicted (in windows for models with a fixed `clip_length`, combined by
    `window_rule`: "centred", the fast default, or "stride1_mean"); frames the
    model cannot predict (lost to its temporal receptive field) are NaN, so scoring masks them
    like padding. Batches are padded to the compiled size `padded_size(batch_size)`.
    """

    def __init__(
        self,
        predict: Callable[[dict], jax.Array],
        mesh: jax.sharding.Mesh,
        batch_size: int,
        *,
        frames_lost: int = 0,
        clip_length: int | None = None,
        window_rule: str = "centred",
    ):
        self.predict = predict
        self.window_rule = window_rule
        self.mesh = mesh
        self.compiled_size = padded_size(batch_size)
        self.frames_lost = frames_lost
        self.clip_length = clip_length

    def _forward(self, clip: dict[str, np.ndarray]) -> np.ndarray:
        local = {key: value[local_slice(self.compiled_size)] for key, value in clip.items()}
        return np.asarray(self.predict(global_batch(local, self.mesh)))

    def predict_normalized(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """[B, T, Nmax] for a batch of at most `batch_size` whole trials; NaN where not predicted."""
        count = batch["mouse"].shape[0]
        padded = _pad_examples(batch, self.compiled_size)
        full = predict_frames(self._forward, padded, frames_lost=self.frames_lost, clip_length=self.clip_length,
                              pad_start=False, rule=self.window_rule)
        return full[:count]


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
    window_rule: str = "centred",
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Yields (batch, predictions [B, T, N]) for every trial of a tier of one mouse (NaN where
    the model predicts nothing): the trainer's own predictions, for tests and tools."""
    n_neurons = store.meta(mouse).n_neurons
    predictor = ShardedPredictor(predict, mesh, batch_size, frames_lost=frames_lost, clip_length=clip_length,
                                 window_rule=window_rule)
    for batch in make_eval_batches(store, mouse, tier, batch_size):
        yield batch, predictor.predict_normalized(batch)[..., :n_neurons]


def validation_score(
    predictor: ShardedPredictor,
    store,
    mice: tuple[str, ...],
    tier: str,
    metric: str,
    batch_size: int,
    burn_in: int | None,
) -> tuple[float, dict[str, float]]:
    """The evaluator `metric`'s primary score pooled over all neurons of all mice, and per mouse."""
    evaluator = get_evaluator(metric)
    per_mouse = [score_tier(predictor, store, mouse, tier, {metric: evaluator}, burn_in=burn_in,
                            batch_size=batch_size).results[metric] for mouse in mice]
    pooled = evaluator.pool(per_mouse)[evaluator.primary]
    return float(pooled), {mouse: float(r.pooled[evaluator.primary]) for mouse, r in zip(mice, per_mouse)}
