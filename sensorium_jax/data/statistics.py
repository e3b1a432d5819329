"""The two layouts of `meta/statistics/<key>/<group>/<stat>.npy` and the pooling between them.

The SENSORIUM 2023 release stores statistics PER FRAME, shaped like one padded trial:
videos [H, W, T], responses [N, T], behavior and pupil_center [k, T]. Older or hand-made
folders (and the 2022 static release) hold them PER NEURON: a scalar (size-1) for the
stimulus, [N] for responses, [k] for behavior and pupil center. The normalization used for
training needs the per-neuron form; `pool_frames` derives it from the per-frame form.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from sensorium_jax.data.kinds import DatasetKind

PER_FRAME = "per_frame"
PER_NEURON = "per_neuron"
LAYOUTS = (PER_FRAME, PER_NEURON)
STATISTIC_GROUPS = ("all", "stimulus_frame")
STATISTIC_NAMES = ("mean", "std", "min", "max", "median")

Statistics = dict[str, dict[str, dict[str, np.ndarray]]]  # [key][group][stat]


def leading_shapes(kind: DatasetKind, n_neurons: int, frame_shape: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Per key, the shape of one frame's statistic: per-frame arrays add a trailing T axis."""
    return {
        kind.stimulus_key: tuple(int(s) for s in frame_shape),
        "responses": (int(n_neurons),),
        "behavior": (kind.behavior_dim,),
        "pupil_center": (2,),
    }


def per_neuron_shape(key: str, kind: DatasetKind, lead: tuple[int, ...]) -> tuple[int, ...]:
    """The per-neuron layout: the stimulus statistics are scalars, the others keep `lead`."""
    return () if key == kind.stimulus_key else lead


def layout_of(key: str, kind: DatasetKind, lead: tuple[int, ...], shape: tuple[int, ...]) -> tuple[str, int] | None:
    """(layout, frames) of a statistic of this shape (frames 0 for per-neuron), or None."""
    if key == kind.stimulus_key and int(np.prod(shape)) == 1:
        return PER_NEURON, 0
    if key != kind.stimulus_key and shape == lead:
        return PER_NEURON, 0
    if kind.is_video and len(shape) == len(lead) + 1 and shape[:-1] == lead and shape[-1] >= 1:
        return PER_FRAME, int(shape[-1])
    return None


def describe_shapes(key: str, kind: DatasetKind, lead: tuple[int, ...]) -> str:
    """Both accepted shapes of a statistic, for error messages."""
    if key == kind.stimulus_key:
        per_neuron = "a scalar or size-1 array (per-neuron layout)"
    else:
        per_neuron = f"{list(lead)} (per-neuron layout)"
    if not kind.is_video:
        return f"shape {per_neuron}"
    per_frame = "[" + ", ".join([*map(str, lead), "T"]) + "]"
    return f"shape {per_neuron} or {per_frame} (per-frame layout, T frames)"


def pool_frames(statistics: Mapping, kind: DatasetKind) -> Statistics:
    """Per-neuron/scalar statistics from per-frame ones, pooling frames as equal-size groups.

    Law of total variance over frames (and pixels for the stimulus): mean = mean of the
    per-frame means; var = mean of (std^2 + mean^2) - mean^2. Exact when every frame counted
    the same number of samples; a frame no trial reached (NaN) is skipped. min/max are the
    extremes over frames, the median the median of the per-frame medians (an approximation).
    Pure: float64 inside, float32 out.
    """
    pooled: Statistics = {}
    for key, groups in statistics.items():
        pooled[key] = {}
        for group, stats in groups.items():
            axes = None if key == kind.stimulus_key else -1  # the stimulus: pixels and frames
            mean_f = np.asarray(stats["mean"], np.float64)
            std_f = np.asarray(stats["std"], np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
                mean = np.nanmean(mean_f, axis=axes)
                second = np.nanmean(np.square(std_f) + np.square(mean_f), axis=axes)
                values = {
                    "mean": mean,
                    "std": np.sqrt(np.maximum(second - np.square(mean), 0.0)),
                    "min": np.nanmin(np.asarray(stats["min"], np.float64), axis=axes),
                    "max": np.nanmax(np.asarray(stats["max"], np.float64), axis=axes),
                    "median": np.nanmedian(np.asarray(stats["median"], np.float64), axis=axes),
                }
            pooled[key][group] = {name: np.asarray(value, np.float32) for name, value in values.items()}
    return pooled
