"""AtlasData from a store: the repeated stimuli of each mouse, grouped by shared stimulus sets.

Static stores give one image per stimulus. Video stores give clips: `frames="mean"` keeps the
clip (its features are averaged over the sampled frames, its responses over the same frames)
and `frames="each"` makes every sampled frame a stimulus of its own. Frames before the data
set's burn-in are skipped; every `frame_stride`-th frame after it is used.
Mice that saw the same stimuli are scored together (and give each other the inter-animal
ceiling); SENSORIUM recordings are all primary visual cortex, so the area is "V1".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sensorium_jax.atlas.data import AtlasData, Recording


def _mouse_arrays(store, mouse: str, tiers: Sequence[str], frame_stride: int, frames: str):
    meta = store.meta(mouse)
    kind = meta.dataset_kind
    trials = meta.trials_of(tuple(tiers or (kind.validation_tier,)))
    if trials.size == 0:
        return None
    arrays = store.arrays(mouse)
    video = np.asarray(arrays["videos"][trials].read().result(), np.float32)  # [t, T, H, W]
    resp = np.asarray(arrays["responses"][trials].read().result(), np.float32)  # [t, T, N]
    if kind.is_video:
        length = int(meta.lengths[trials].min())
        idx = np.arange(min(kind.burn_in, length - 1), length, frame_stride)
    else:
        idx = np.arange(1)
    video, resp = video[:, idx], resp[:, idx]
    ids = meta.stimulus_ids[trials]
    uniq = np.unique(ids)
    n_rep = max(int((ids == s).sum()) for s in uniq)
    stim = np.stack([video[np.flatnonzero(ids == s)[0]] for s in uniq])  # [S, F, H, W]
    reps = np.full((n_rep, len(uniq), len(idx), resp.shape[2]), np.nan, np.float32)
    for j, s in enumerate(uniq):
        rows = np.flatnonzero(ids == s)
        reps[: len(rows), j] = resp[rows]
    if frames == "each" and kind.is_video:
        stim = stim.reshape(-1, *stim.shape[2:])
        reps = reps.reshape(n_rep, -1, resp.shape[2])
        ids_out = (uniq[:, None] * 10_000 + idx[None]).reshape(-1)
    else:
        reps = reps.mean(axis=2)
        stim = stim if kind.is_video else stim[:, 0]
        ids_out = uniq
    return meta, stim, reps, ids_out


def from_store(
    path: str,
    *,
    mice: Sequence[str] | None = None,
    tiers: Sequence[str] = (),
    frames: str = "mean",
    frame_stride: int = 10,
) -> list[AtlasData]:
    """One AtlasData per group of mice with identical repeated stimuli (default tier: validation)."""
    from sensorium_jax.data.store import open_store

    if frames not in ("mean", "each"):
        raise ValueError(f"frames must be 'mean' or 'each', got {frames!r}")
    store = open_store(path)
    names = list(mice) if mice else [store.mouse_name(i) for i in range(len(store.card().mice))]
    groups: dict[tuple, AtlasData] = {}
    for name in names:
        got = _mouse_arrays(store, name, tiers, frame_stride, frames)
        if got is None:
            continue
        meta, stim, reps, ids = got
        rec = Recording(meta.name, reps, np.full(meta.n_neurons, "V1"), np.asarray(meta.unit_ids))
        key = tuple(ids.tolist())
        if key in groups:
            groups[key].recordings.append(rec)
        else:
            groups[key] = AtlasData(stim, [rec], ids, source=str(path))
    if not groups:
        raise ValueError(f"no trials of tiers {tuple(tiers) or 'validation'} in {path}")
    return list(groups.values())
