"""Reference-kit normalization (SENSORIUM 2023 baseline), computed from a mouse's statistics.

video `(x - mean) / std` with the scalar statistics of `videos/all` (`images/all` for 2022
data); responses `x / s` per neuron, where `s = std` and any std below 1% of the mean std is
replaced by that threshold (no mean subtraction: metrics are computed in these units);
behavior `x / std`; pupil center `(x - mean) / std`. As in the reference kit
(neuralpredictors' NeuroNormalizer), responses and behavior are multiplied by a float32
"precision" `1 / s` rather than divided (within an ulp of the division, and it halves the
cost of the pipeline's largest pass).

Pure numpy in float32, so the input pipeline and the tests that check it compute bit-identical
values with the same functions. A zero or non-finite std (say, behaviour zeroed in a static
track) is replaced by 1 so that nothing becomes inf or NaN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from sensorium_jax.data.kinds import DatasetKind, as_kind

STATISTICS_GROUP = "all"


@dataclasses.dataclass(frozen=True)
class Normalization:
    """The float32 constants of one mouse's normalization."""

    video_mean: np.float32
    video_std: np.float32
    response_scale: np.ndarray  # [N]; normalized = raw * (1 / response_scale)
    behavior_scale: np.ndarray  # [k]; normalized = raw * (1 / behavior_scale)
    pupil_mean: np.ndarray  # [2]
    pupil_std: np.ndarray  # [2]
    response_precision: np.ndarray = dataclasses.field(init=False)  # 1 / response_scale
    behavior_precision: np.ndarray = dataclasses.field(init=False)  # 1 / behavior_scale

    def __post_init__(self) -> None:
        for name in ("response", "behavior"):
            scale = np.asarray(getattr(self, f"{name}_scale"), np.float32)
            object.__setattr__(self, f"{name}_precision", (np.float32(1) / scale).astype(np.float32))


def _safe_std(std: np.ndarray) -> np.ndarray:
    std = np.asarray(std, np.float32)
    return np.where(np.isfinite(std) & (std > 0), std, np.float32(1)).astype(np.float32)


def response_scale(std: np.ndarray) -> np.ndarray:
    """Per-neuron divisor: std, floored at 1% of the mean std (reference kit)."""
    std = np.asarray(std, np.float32)
    threshold = np.float32(0.01) * np.float32(np.nanmean(std))
    scale = np.where(std > threshold, std, threshold).astype(np.float32)
    return _safe_std(scale)


def from_statistics(statistics: Mapping, kind: DatasetKind | str) -> Normalization:
    """Normalization constants from the per-neuron `statistics[key][group][stat]` of a mouse
    (a per-frame source's statistics pooled first: `statistics.pool_frames`)."""
    stimulus = statistics[as_kind(kind).stimulus_key][STATISTICS_GROUP]
    responses = statistics["responses"][STATISTICS_GROUP]
    behavior = statistics["behavior"][STATISTICS_GROUP]
    pupil = statistics["pupil_center"][STATISTICS_GROUP]
    return Normalization(
        video_mean=np.float32(np.asarray(stimulus["mean"], np.float32).reshape(-1)[0]),
        video_std=np.float32(_safe_std(np.asarray(stimulus["std"]).reshape(-1)[:1])[0]),
        response_scale=response_scale(responses["std"]),
        behavior_scale=_safe_std(behavior["std"]),
        pupil_mean=np.asarray(pupil["mean"], np.float32),
        pupil_std=_safe_std(pupil["std"]),
    )


def mean_response(statistics: Mapping, norm: Normalization) -> np.ndarray:
    """Training-tier mean response per neuron in normalized units."""
    mean = np.asarray(statistics["responses"][STATISTICS_GROUP]["mean"], np.float32)
    return normalize_responses(mean, norm)


# The functions below take an optional `out` so the pipeline can write straight into a
# batch buffer; without it they allocate. Both paths perform the same float32 operations.


def normalize_video(x: np.ndarray, norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    out = np.subtract(x, norm.video_mean, out=out, dtype=np.float32)
    return np.divide(out, norm.video_std, out=out)


def normalize_responses(x: np.ndarray, norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    return np.multiply(x, norm.response_precision, out=out, dtype=np.float32)


def normalize_behavior(x: np.ndarray, norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    return np.multiply(x, norm.behavior_precision, out=out, dtype=np.float32)


def normalize_pupil(x: np.ndarray, norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    out = np.subtract(x, norm.pupil_mean, out=out, dtype=np.float32)
    return np.divide(out, norm.pupil_std, out=out)
