"""Whole-trial predictions from a model's clip-wise forward pass.

Most cores take clips of any length, so a trial is one call. Cores with a fixed input length
(`model.clip_length`, e.g. DwiseNeuro) slide over the trial in overlapping windows, by one of
two rules:

- "centred": windows overlapping by about half; each frame takes its prediction from the
  window in which it sits most centrally (edge frames of a non-causal window see zero padding
  instead of the neighbouring frames). About clip_length / 2 times fewer forward passes.
- "stride1_mean": a window at every start, each frame's predictions from all windows that
  predict it averaged (DwiseNeuro's own inference).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]
TIME_KEYS = ("video", "behavior", "pupil_center", "responses", "frame_mask")
WINDOW_RULES = ("centred", "stride1_mean")


def window_rule(model_config) -> str:
    """The whole-trial rule a model config asks for (`window_inference`; "centred" if unset)."""
    rule = str(model_config.get("window_inference", "centred"))
    if rule not in WINDOW_RULES:
        raise ValueError(f"window_inference must be one of {', '.join(WINDOW_RULES)}, got {rule!r}")
    return rule


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
    rule: str = "centred",
) -> np.ndarray:
    """[B, T, N] predictions for every frame of a (pipeline-layout) batch of T-frame trials.

    `forward(clip)` returns predictions for the last `clip frames - frames_lost` frames of the
    clip. With `pad_start` the first input frame is repeated `frames_lost` times before the
    trial (a steady screen) so every frame gets a prediction; without, the first
    `frames_lost` frames are NaN (they are not predicted). `rule` says how fixed-length windows
    are combined (see the module's doc).
    """
    if rule not in WINDOW_RULES:
        raise ValueError(f"window rule must be one of {', '.join(WINDOW_RULES)}, got {rule!r}")
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
    if rule == "stride1_mean":
        return sliding_mean(forward, inputs, window)[:, lead:]
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


def sliding_mean(forward: Forward, inputs: dict[str, np.ndarray], window: int) -> np.ndarray:
    """[B, T, N]: a window at every start 0 .. T - window, each frame's predictions averaged over
    the windows that predict it (NaN where none does)."""
    total = inputs["video"].shape[1]
    if total < window:
        raise ValueError(f"a {total}-frame input is shorter than the model's {window}-frame clip")
    sums, counts = None, np.zeros(total, np.int64)
    for start in range(total - window + 1):
        clip = {key: value[:, start:start + window] if key in TIME_KEYS else value for key, value in inputs.items()}
        out = np.asarray(forward(clip), np.float64)  # frames [start + window - len, start + window)
        if sums is None:
            sums = np.zeros((out.shape[0], total, out.shape[2]), np.float64)
        sums[:, start + window - out.shape[1]:start + window] += out
        counts[start + window - out.shape[1]:start + window] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[None, :, None]
    return np.where(counts[None, :, None] > 0, mean, np.nan).astype(np.float32)


def _with_lead(value: np.ndarray, lead: int) -> np.ndarray:
    if lead == 0:
        return value
    return np.concatenate([np.repeat(value[:, :1], lead, axis=1), value], axis=1)
