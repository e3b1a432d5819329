"""Turns user-facing trial collections into fixed-shape masked batches for the kernels.

Every batch has the same shape (padded with masked trials and frames), so each kernel
compiles once per call whatever the trial lengths and the number of trials.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import NamedTuple, Union

import jax
import numpy as np

TrialArrays = Union[np.ndarray, jax.Array, Sequence[np.ndarray]]


class Batch(NamedTuple):
    """Host arrays for one kernel call; `trials` are the source indices (-1 for padding)."""

    responses: np.ndarray  # float32 [B, T, N] (or [B, N] for static data)
    predictions: np.ndarray
    mask: np.ndarray  # bool [B, T] (or [B])
    trials: np.ndarray  # int64 [B]


def _trial_list(arrays: TrialArrays, name: str) -> np.ndarray | list[np.ndarray]:
    """A stacked [trials, T, N] array stays as is; a sequence becomes a list of [T_i, N]."""
    if isinstance(arrays, (np.ndarray, jax.Array)):
        arrays = np.asarray(arrays)
        if arrays.ndim != 3:
            raise ValueError(
                f"{name}: expected [trials, T, N] or a list of [T_i, N], got {arrays.shape}"
            )
        return arrays
    out = [np.asarray(a) for a in arrays]
    for i, a in enumerate(out):
        if a.ndim != 2:
            raise ValueError(f"{name}[{i}]: expected [T_i, N], got shape {a.shape}")
    if not out:
        raise ValueError(f"{name}: no trials")
    return out


def valid_rows(values: np.ndarray, name: str) -> np.ndarray:
    """Rows (frames or trials) that are not NaN padding; a partly NaN row is an error."""
    nan = np.isnan(values)
    padded = nan.all(axis=-1)
    if np.any(nan.any(axis=-1) & ~padded):
        raise ValueError(f"{name}: NaN inside a frame; only whole frames may be NaN (padding)")
    return ~padded


class TrialPairs:
    """Responses and predictions as trials [T_i, N] of possibly different lengths."""

    def __init__(self, responses: TrialArrays, predictions: TrialArrays):
        self.responses = _trial_list(responses, "responses")
        self.predictions = _trial_list(predictions, "predictions")
        if len(self.responses) != len(self.predictions):
            raise ValueError(
                f"responses has {len(self.responses)} trials, predictions {len(self.predictions)}"
            )
        for i in range(len(self.responses)):
            if self.responses[i].shape != self.predictions[i].shape:
                raise ValueError(
                    f"trial {i}: responses {self.responses[i].shape} != "
                    f"predictions {self.predictions[i].shape}"
                )
        self.lengths = np.array([r.shape[0] for r in self.responses], np.int64)
        self.n_trials = len(self.responses)
        self.n_frames = int(self.lengths.max())
        self.n_neurons = int(self.responses[0].shape[-1])
        if any(r.shape[-1] != self.n_neurons for r in self.responses):
            raise ValueError("responses: all trials must have the same number of neurons")

    def batches(self, batch_size: int, burn_in: int) -> Iterator[Batch]:
        """Batches [batch_size, T_max, N]; frames before `burn_in` and NaN frames are masked."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        shape = (batch_size, self.n_frames, self.n_neurons)
        for start in range(0, self.n_trials, batch_size):
            x = np.zeros(shape, np.float32)
            y = np.zeros(shape, np.float32)
            mask = np.zeros(shape[:2], bool)
            trials = np.full(batch_size, -1, np.int64)
            for j, i in enumerate(range(start, min(start + batch_size, self.n_trials))):
                length = self.lengths[i]
                x[j, :length] = self.responses[i]
                y[j, :length] = self.predictions[i]
                mask[j, :length] = valid_rows(x[j, :length], f"responses[{i}]")
                trials[j] = i
            mask[:, :burn_in] = False
            if np.isnan(y[mask]).any():
                raise ValueError("predictions: NaN in a frame that is scored")
            yield Batch(x, y, mask, trials)


def static_batches(
    responses: np.ndarray, predictions: np.ndarray, batch_size: int
) -> Iterator[Batch]:
    """Batches [batch_size, N] of static trials; all-NaN trials are masked out."""
    responses = np.asarray(responses)
    predictions = np.asarray(predictions)
    if responses.ndim != 2 or responses.shape != predictions.shape:
        raise ValueError(
            f"expected responses and predictions [trials, N] of equal shape, got "
            f"{responses.shape} and {predictions.shape}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_trials, n_neurons = responses.shape
    for start in range(0, n_trials, batch_size):
        stop = min(start + batch_size, n_trials)
        x = np.zeros((batch_size, n_neurons), np.float32)
        y = np.zeros((batch_size, n_neurons), np.float32)
        mask = np.zeros(batch_size, bool)
        x[: stop - start] = responses[start:stop]
        y[: stop - start] = predictions[start:stop]
        mask[: stop - start] = valid_rows(x[: stop - start], "responses")
        if np.isnan(y[mask]).any():
            raise ValueError("predictions: NaN in a trial that is scored")
        trials = np.full(batch_size, -1, np.int64)
        trials[: stop - start] = np.arange(start, stop)
        yield Batch(x, y, mask, trials)


def stimulus_slots(ids: Sequence[Hashable], n_trials: int) -> tuple[np.ndarray, int]:
    """Maps arbitrary hashable stimulus ids to slots 0..S-1 in order of first appearance."""
    ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
    if len(ids) != n_trials:
        raise ValueError(f"got {len(ids)} stimulus ids for {n_trials} trials")
    table: dict[Hashable, int] = {}
    slots = np.array([table.setdefault(i, len(table)) for i in ids], np.int32)
    return slots, len(table)


def batch_slots(slots: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Slots of a batch's trials; padding trials get slot 0 (they are fully masked)."""
    return np.where(trials >= 0, slots[np.maximum(trials, 0)], 0).astype(np.int32)
