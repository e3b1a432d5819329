"""Streams whole trials of a tier through a predictor into the metric accumulators."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from sensorium_jax import metrics
from sensorium_jax.data.pipeline import make_eval_batches

# (mouse, tier, trial indices in the store, predictions [B, T, N], frame mask [B, T])
TrialSink = Callable[[str, str, np.ndarray, np.ndarray, np.ndarray], None]


@dataclasses.dataclass
class TierResult:
    mouse: str
    tier: str
    trials: int
    neurons: int
    scored: bool  # False when the tier's responses are withheld (all zeros)
    single_trial: np.ndarray | None = None  # [N]
    to_average: np.ndarray | None = None  # [N]
    example: dict | None = None  # one trial's recorded and predicted traces, for plots

    def summary(self) -> dict:
        out = {"trials": self.trials, "neurons": self.neurons, "scored": self.scored}
        if self.scored:
            out["single_trial_correlation"] = float(self.single_trial.mean())
            out["correlation_to_average"] = float(self.to_average.mean())
        return out


def evaluate_tier(
    predictor,
    store,
    mouse: str,
    tier: str,
    *,
    batch_size: int = 8,
    burn_in: int = 50,
    sink: TrialSink | None = None,
) -> TierResult:
    """Single-trial correlation and correlation to average of one mouse on one tier."""
    meta = store.meta(mouse)
    n = meta.n_neurons
    trials = meta.trials_of(tier)
    stimuli = np.unique(meta.stimulus_index[trials])
    slot_of = {int(s): i for i, s in enumerate(stimuli)}
    n_frames = int(meta.lengths[trials].max()) if len(trials) else 0
    single = metrics.init_correlation_stats(n)
    repeats = metrics.init_repeat_stats(max(len(stimuli), 1), max(n_frames, 1), n)
    any_signal = False
    example = None
    for batch in make_eval_batches(store, mouse, tier, batch_size):
        predictions = predictor.predict_normalized(batch)[..., :n]
        responses = np.nan_to_num(batch["responses"][..., :n])
        frames = responses.shape[1]
        mask = batch["frame_mask"].astype(bool) & (np.arange(frames)[None] >= burn_in)
        any_signal |= bool(np.any(responses[batch["frame_mask"].astype(bool)] != 0))
        single = metrics.update_correlation_stats(single, responses, predictions, mask)
        slots = np.asarray([slot_of[int(s)] for s in batch["stimulus"]], np.int32)
        padded_r = np.zeros((responses.shape[0], n_frames, n), np.float32)
        padded_p = np.zeros_like(padded_r)
        padded_m = np.zeros((responses.shape[0], n_frames), bool)
        padded_r[:, :frames], padded_p[:, :frames], padded_m[:, :frames] = responses, predictions, mask
        repeats = metrics.update_repeat_stats(repeats, padded_r, padded_p, slots, padded_m)
        if sink is not None:
            sink(mouse, tier, batch["trial"], predictions, batch["frame_mask"])
        if example is None:
            length = int(batch["frame_mask"][0].sum())
            example = {"trial": int(batch["trial"][0]), "recorded": responses[0, :length],
                       "predicted": predictions[0, :length]}
    result = TierResult(mouse, tier, trials=len(trials), neurons=n, scored=any_signal and len(trials) > 0,
                        example=example)
    if result.scored:
        result.single_trial = np.asarray(metrics.correlation_from_stats(single))
        result.to_average = np.asarray(metrics.correlation_to_average_from_stats(repeats))
    return result

