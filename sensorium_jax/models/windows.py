"""Whole-trial predictions from a model's clip-wise forward pass.

Most cores take clips of any length, so a trial is one call. Cores with a fixed input length
(`model.clip_length`, e.g. DwiseNeuro) slide over the trial in overlapping windows, and each
frame takes its prediction from the window in which it sits most centrally (edge frames of a
non-causal window see zero padding instead of the neighbouring frames).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]
TIME_KEYS = ("video", "behavior", "pupil_center", "responses", "frame_mask")


def window_starts(total: int, window: int, lost: int) -> list[int]:
    """Window starts covering frames [lost, total) with outputs that overlap by about half."""
    if total < window:
        raise ValueError(f"a {total}-frame input is shorter than the model's {window}-frame clip")
    step = max((window - lost) // 2, 1)
    starts = list(range(0, total - window + 1, step))
    if starts[-1] != total - window:
        starts.append(total - window)
    return starts


def predict_frames(
    forward: Forward,
    batch: dict[str, np.ndarray],
    *,
    frames_lost: int,
    clip_length: int | None,
    pad_start: bool,
) -> np.ndarray:
    """[B, T, N] predictions for every frame of a (pipeline-layout) batch of T-frame trials.

    `forward(clip)` returns predictions for the last `clip frames - frames_lost` frames of the
    clip. With `pad_start` the first input frame is repeated `frames_lost` times before the
    trial (a steady screen) so every frame gets a prediction; without, the first
    `frames_lost` frames are NaN (they are not predicted).
    """
    frames = batch["video"].shape[1]
    lead = frames_lost if pad_start else 0
    inputs = {key: _with_lead(value, lead) if key in TIME_KEYS else value for key, value in batch.items()}
    total = frames + lead
    if not clip_length:
        out = np.asarray(forward(inputs))
        full = np.full((out.shape[0], total, out.shape[2]), np.nan, np.float32)
        full[:, total - out.shape[1]:] = out
        return full[:, lead:]

    window = int(clip_length)
    full = None
    distance = np.full(total, np.inf)
    for start in window_starts(total, window, frames_lost):
        clip = {key: value[:, start:start + window] if key in TIME_KEYS else value for key, value in inputs.items()}
        out = np.asarray(forward(clip))  # frames [start + window - len, start + window)
        first = start + window - out.shape[1]
        if full is None:
            full = np.full((out.shape[0], total, out.shape[2]), np.nan, np.float32)
        covered = np.arange(first, start + window)
        centre = (first + start + window - 1) / 2
        closer = np.abs(covered - centre) < distance[covered]
        full[:, covered[closer]] = out[:, closer]
        distance[covered[closer]] = np.abs(covered[closer] - centre)
    return full[:, lead:]


def _with_lead(value: np.ndarray, lead: int) -> np.ndarray:
    if lead == 0:
        return value
    return np.concatenate([np.repeat(value[:, :1], lead, axis=1), value], axis=1)
