"""Reference-kit normalization (SENSORIUM 2023 starter kit, neuralpredictors' NeuroNormalizer).

The reference applies it to the raw trial arrays, elementwise with the statistics of the
`all` group: video `(x - mean) / std`; responses `x * precision` with `precision = 1 / s`,
where any `s` not above 1% of the mean std (`threshold = 0.01 * nanmean(std)`, over every
element of the std array) is replaced by that threshold (no mean subtraction: metrics are
computed in these units); behavior `x * (1 / std)` (no mean subtraction); pupil center
`(x - mean) / std`. Multiplying by the float32 precision is what the reference does too (and
it halves the cost of the pipeline's largest pass).

Modes (`config.data.normalization`):
- "per_neuron": one constant per pixel-independent stimulus, per neuron and per behaviour
  channel (a per-frame source's statistics pooled first: `statistics.pool_frames`).
- "per_frame": the source's per-frame statistics, elementwise by frame index, as the
  reference does with the 2023 release: video per pixel and frame, responses per neuron and
  frame (the floor's mean taken over all neurons and frames), behaviour and pupil centre per
  frame. A clip starting at frame s of its trial uses statistics frames s..s+T-1 (`window`);
  a clip reaching past the frames the statistics cover is refused with one line (the
  statistics are shaped like one padded trial, so a store's trials never are).
- "none": inputs and targets stay raw. The constants are kept (per frame when the source has
  them, as the reference's submission divides by them) only to convert raw predictions to
  the normalized units of submissions.
- "auto": "per_frame" for a mouse whose source has per-frame statistics, else "per_neuron".

Scores are computed in the units of the batches' responses (`data.pipeline`). Correlation per
neuron ignores a constant scale, so per neuron, raw and per-neuron-normalized units give the
same correlation; a per-frame scale does not: with per-frame statistics only "per_frame"
(and "auto") score in the leaderboard's units, while "none" scores raw against raw (as the
first-place solution's own cross-validation did) and "per_neuron" like raw. Submissions are
always written in normalized units (`evaluation.submission`).

Pure numpy in float32, so the input pipeline and the tests that check it compute bit-identical
values with the same functions. Where the reference would divide by a zero or non-finite std
(say, behaviour zeroed in a static track) the std is replaced by 1, and a non-finite
per-frame mean (a frame no trial reached) by 0, so that nothing becomes inf or NaN.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from sensorium_jax.data.kinds import DatasetKind, as_kind
from sensorium_jax.data.statistics import PER_FRAME, PER_NEURON
from sensorium_jax.errors import InputDataError

STATISTICS_GROUP = "all"
AUTO, NONE = "auto", "none"
MODES = (AUTO, PER_NEURON, PER_FRAME, NONE)
RESOLVED_MODES = (PER_NEURON, PER_FRAME, NONE)
# The per-frame constants, frames first: what a dataset card keeps of a per-frame normalization.
FRAME_FIELDS = ("video_mean", "video_std", "response_scale", "behavior_scale", "pupil_mean", "pupil_std")


@dataclasses.dataclass(frozen=True)
class Normalization:
    """The float32 constants of one mouse's normalization.

    Per neuron: `video_mean`/`video_std` scalars, `response_scale [N]`, `behavior_scale [k]`,
    `pupil_* [2]`. Per frame (`frames` F > 0), frames first: `video_* [F, H, W]`,
    `response_scale [F, N]`, `behavior_scale [F, k]`, `pupil_* [F, 2]`. `applied=False`
    ("none"): inputs and targets stay raw; the constants only convert predictions' units.
    """

    video_mean: Any
    video_std: Any
    response_scale: np.ndarray  # normalized = raw * (1 / response_scale)
    behavior_scale: np.ndarray  # normalized = raw * (1 / behavior_scale)
    pupil_mean: np.ndarray
    pupil_std: np.ndarray
    frames: int = 0  # 0: constant over frames; F: per frame, F frames
    applied: bool = True
    mode: str = PER_NEURON
    response_precision: np.ndarray | None = None  # 1 / response_scale (derived when not given)
    behavior_precision: np.ndarray | None = None  # 1 / behavior_scale (derived when not given)

    def __post_init__(self) -> None:
        for name in ("response", "behavior"):
            if getattr(self, f"{name}_precision") is None:
                scale = np.asarray(getattr(self, f"{name}_scale"), np.float32)
                object.__setattr__(self, f"{name}_precision", (np.float32(1) / scale).astype(np.float32))

    def window(self, start: int, length: int, where: Any = "normalization") -> "Normalization":
        """The constants of frames start..start+length-1 of a trial (itself when per neuron).

        Frames past the statistics (an in-silico stimulus longer than any recorded trial) take
        the last frame's constants, as frames few trials reach do (`hold_unsupported_frames`);
        a store whose trials outrun its statistics is refused when opened (`for_store`).
        """
        if not self.frames:
            return self
        start, length = int(start), int(length)
        if start < 0 or length < 0:
            raise InputDataError(where, "frames", "a non-negative start and length", f"start {start}, length {length}")
        index = np.minimum(np.arange(start, start + length), self.frames - 1)
        cut = {name: getattr(self, name)[index] for name in (*FRAME_FIELDS, "response_precision",
                                                            "behavior_precision")}
        return dataclasses.replace(self, frames=length, **cut)


def _safe_std(std: np.ndarray) -> np.ndarray:
    std = np.asarray(std, np.float32)
    return np.where(np.isfinite(std) & (std > 0), std, np.float32(1)).astype(np.float32)


def _safe_mean(mean: np.ndarray) -> np.ndarray:
    mean = np.asarray(mean, np.float32)
    return np.where(np.isfinite(mean), mean, np.float32(0)).astype(np.float32)


def response_scale(std: np.ndarray) -> np.ndarray:
    """Divisor of the responses: std, floored at 1% of the mean std over all its elements
    (reference kit; per neuron [N] or per neuron and frame)."""
    std = np.asarray(std, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN std: the floor is NaN, then 1
        threshold = np.float32(0.01) * np.float32(np.nanmean(std))
    scale = np.where(std > threshold, std, threshold).astype(np.float32)
    return _safe_std(scale)


def resolve_mode(requested: str, layout: str, where: Any = "data.normalization") -> str:
    """The mode a mouse is normalized with: `requested`, "auto" resolved by the source's layout."""
    if requested not in MODES:
        raise InputDataError(where, "normalization", "one of " + ", ".join(map(repr, MODES)), repr(requested))
    if requested == AUTO:
        return PER_FRAME if layout == PER_FRAME else PER_NEURON
    if requested == PER_FRAME and layout != PER_FRAME:
        raise InputDataError(where, "normalization", "'per_frame' only for a source with per-frame statistics "
                             "('auto' or 'per_neuron' otherwise)", f"{layout} statistics")
    return requested


def from_statistics(statistics: Mapping, kind: DatasetKind | str) -> Normalization:
    """Per-neuron constants from the per-neuron `statistics[key][group][stat]` of a mouse
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


def _frames_first(array: Any) -> np.ndarray:
    """A per-frame statistic as stored ([..., T], frames last) -> frames first [T, ...]."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(array, np.float32), -1, 0))


def from_frame_statistics(statistics: Mapping, kind: DatasetKind | str) -> Normalization:
    """Per-frame constants from a source's per-frame statistics (`Store.source_statistics`):
    videos [H, W, T], responses [N, T], behavior and pupil_center [k, T]."""
    stimulus = statistics[as_kind(kind).stimulus_key][STATISTICS_GROUP]
    responses = statistics["responses"][STATISTICS_GROUP]
    behavior = statistics["behavior"][STATISTICS_GROUP]
    pupil = statistics["pupil_center"][STATISTICS_GROUP]
    video_mean = _safe_mean(_frames_first(stimulus["mean"]))
    return Normalization(
        video_mean=video_mean,
        video_std=_safe_std(_frames_first(stimulus["std"])),
        response_scale=response_scale(_frames_first(responses["std"])),
        behavior_scale=_safe_std(_frames_first(behavior["std"])),
        pupil_mean=_safe_mean(_frames_first(pupil["mean"])),
        pupil_std=_safe_std(_frames_first(pupil["std"])),
        frames=int(video_mean.shape[0]),
        mode=PER_FRAME,
    )


# A frame's statistics are estimates only where enough trials reach it.
MIN_FRAME_SUPPORT = 0.5


def supported_frames(lengths: np.ndarray, frames: int, min_support: float = MIN_FRAME_SUPPORT) -> int:
    """How many leading frames at least `min_support` of the trials (with these lengths) reach."""
    lengths = np.asarray(lengths, np.int64)
    if lengths.size == 0:
        return frames
    reached = (lengths[None, :] > np.arange(frames)[:, None]).mean(axis=1)
    return max(int(np.sum(np.cumprod(reached >= min_support))), 1)


def hold_unsupported_frames(norm: Normalization, lengths: np.ndarray,
                            min_support: float = MIN_FRAME_SUPPORT) -> Normalization:
    """Per-frame constants past the frames most trials reach replaced by the last such frame's.

    The reference divides by whatever the release's per-frame std is; at a frame only a few long
    trials reach, that std is estimated from those few (or one: 0) and z-scores of thousands
    follow. Where every trial reaches every frame (the 2023 release) nothing changes.
    """
    if not norm.frames:
        return norm
    keep = supported_frames(lengths, norm.frames, min_support)
    if keep >= norm.frames:
        return norm
    index = np.minimum(np.arange(norm.frames), keep - 1)
    held = {name: np.asarray(getattr(norm, name))[index] for name in FRAME_FIELDS}
    return dataclasses.replace(norm, response_precision=None, behavior_precision=None, **held)


def unapplied(reference: Normalization) -> Normalization:
    """Mode "none": raw inputs and targets; `reference`'s constants kept for units only."""
    return dataclasses.replace(reference, applied=False, mode=NONE)


def for_store(store: Any, mouse: str | int, requested: str) -> Normalization:
    """The normalization of one mouse of a store (`data.store.Store`) in the `requested` mode."""
    meta = store.meta(mouse)
    layout = meta.statistics_layout
    mode = resolve_mode(requested, layout)
    if mode == PER_NEURON:
        return meta.normalization
    reference = hold_unsupported_frames(from_frame_statistics(store.source_statistics(mouse), meta.dataset_kind),
                                        meta.lengths) if layout == PER_FRAME else meta.normalization
    if reference.frames and reference.frames < meta.n_frames:
        raise InputDataError(store.path, f"{meta.name} statistics", f"per-frame statistics of at least "
                             f"{meta.n_frames} frames (the longest trial)", f"{reference.frames} frames")
    return reference if mode == PER_FRAME else unapplied(reference)


def training_mean(store: Any, mouse: str | int, norm: Normalization) -> np.ndarray:
    """Training-tier mean response per neuron [N] in the units the model predicts."""
    meta = store.meta(mouse)
    if not norm.applied:
        return np.asarray(meta.statistics["responses"][STATISTICS_GROUP]["mean"], np.float32)
    if not norm.frames:
        return mean_response(meta.statistics, norm)
    means = _frames_first(store.source_statistics(mouse)["responses"][STATISTICS_GROUP]["mean"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a frame no trial reached is skipped
        return np.nanmean(means * norm.response_precision, axis=0).astype(np.float32)


def mean_response(statistics: Mapping, norm: Normalization) -> np.ndarray:
    """Training-tier mean response per neuron in per-neuron normalized units."""
    mean = np.asarray(statistics["responses"][STATISTICS_GROUP]["mean"], np.float32)
    return normalize_responses(mean, norm)


# The functions below take an optional `out` so the pipeline can write straight into a
# batch buffer; without it they allocate. Both paths perform the same float32 operations.
# A per-frame `norm` must first be cut to the clip's frames (`Normalization.window`).


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


def frame_constants(norm: Normalization) -> dict[str, np.ndarray] | None:
    """A per-frame normalization's constants (frames first) for a dataset card; None per neuron."""
    return {name: np.asarray(getattr(norm, name), np.float32) for name in FRAME_FIELDS} if norm.frames else None


def from_card(mouse: Any) -> Normalization:
    """The normalization a dataset card's mouse (`card.MouseCard`) was trained with."""
    mode, frames = mouse.normalization, mouse.frames
    if mode == PER_FRAME and frames is None:
        raise InputDataError("dataset_card", f"{mouse.name}.frames", "per-frame constants (normalization "
                             "'per_frame')", "none")
    if frames is not None:
        constants = {name: np.asarray(frames[name], np.float32) for name in FRAME_FIELDS}
        reference = Normalization(**constants, frames=int(constants["video_mean"].shape[0]), mode=PER_FRAME)
    else:
        reference = Normalization(
            video_mean=np.float32(mouse.video_mean), video_std=np.float32(mouse.video_std),
            response_scale=np.asarray(mouse.response_scale, np.float32),
            behavior_scale=np.asarray(mouse.behavior_scale, np.float32),
            pupil_mean=np.asarray(mouse.pupil_mean, np.float32), pupil_std=np.asarray(mouse.pupil_std, np.float32),
        )
    return unapplied(reference) if mode == NONE else reference
