"""Which clips (mouse, trial, start frame) make up training step i: a pure function of (seed, i).

Being a function of the step index alone (not of an evolving RNG) is what makes the input
pipeline resumable from a single integer and identical whatever the number of processes
that read slices of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sensorium_jax.errors import InputDataError

MOUSE_SAMPLING = ("all", "uniform", "round")
PER_MOUSE = ("all", "round")  # every mouse contributes `clips_per_mouse` clips to every batch


class ClipSampler:
    """Global batch plan of each step: int64 [B, 3] rows of (mouse, trial, start).

    mouse_sampling="all": every mouse contributes `clips_per_mouse` clips to every batch,
    mouse-major (SENSORIUM baseline). "round": the same clips per mouse, clip-major (row
    `j * mice + m` is mouse m's clip j), so that a batch split evenly between devices or processes
    gives each of them a share of every mouse's clips and the step can take the mice one after
    another (`training.steps`). "uniform": `batch_size` clips, each from a mouse drawn
    uniformly (DwiseNeuro). Trials are drawn uniformly with replacement among those of the
    chosen tiers that are at least `clip_length` frames long; starts uniformly among valid ones.
    """

    def __init__(
        self,
        lengths: Sequence[np.ndarray],
        tiers: Sequence[np.ndarray],
        *,
        clip_length: int,
        train_tiers: Sequence[str],
        seed: int,
        mouse_sampling: str = "all",
        clips_per_mouse: int = 8,
        batch_size: int | None = None,
        where: str = "store",
    ):
        if mouse_sampling not in MOUSE_SAMPLING:
            raise InputDataError(where, "mouse_sampling", " or ".join(map(repr, MOUSE_SAMPLING)), repr(mouse_sampling))
        if clip_length < 1:
            raise InputDataError(where, "clip_length", "a positive number of frames", clip_length)
        self.clip_length = int(clip_length)
        self.seed = int(seed) % 2**63
        self.mouse_sampling = mouse_sampling
        self.eligible = []
        for mouse, (mouse_lengths, mouse_tiers) in enumerate(zip(lengths, tiers)):
            ok = np.isin(np.asarray(mouse_tiers), list(train_tiers)) & (np.asarray(mouse_lengths) >= clip_length)
            self.eligible.append(np.flatnonzero(ok))
        self.lengths = [np.asarray(x, np.int64) for x in lengths]
        counts = np.array([len(e) for e in self.eligible])
        if mouse_sampling in PER_MOUSE:
            if clips_per_mouse < 1:
                raise InputDataError(where, "clips_per_mouse", "at least 1", clips_per_mouse)
            if (counts == 0).any():
                mouse = int(np.flatnonzero(counts == 0)[0])
                raise InputDataError(where, f"mouse {mouse} training trials",
                                     f"a trial of tier {'/'.join(train_tiers)} with >= {clip_length} frames", "none")
            self.batch_size = len(self.eligible) * int(clips_per_mouse)
            if batch_size not in (None, 0, self.batch_size):
                raise InputDataError(where, "batch_size", f"unset or {self.batch_size} (mice x clips_per_mouse) "
                                     f"with mouse_sampling={mouse_sampling!r}", batch_size)
            self.clips_per_mouse = int(clips_per_mouse)
            mice = np.arange(len(self.eligible))
            self.mice = np.repeat(mice, clips_per_mouse) if mouse_sampling == "all" else np.tile(mice, clips_per_mouse)
        else:
            if not batch_size or batch_size < 1:
                raise InputDataError(where, "batch_size", "a positive number of clips with mouse_sampling='uniform'",
                                     batch_size)
            if (counts == 0).all():
                raise InputDataError(where, "training trials",
                                     f"a trial of tier {'/'.join(train_tiers)} with >= {clip_length} frames", "none")
            self.batch_size = int(batch_size)
            self.sampled_mice = np.flatnonzero(counts > 0)
        self._counts = counts

    def __call__(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(step)])
        if self.mouse_sampling in PER_MOUSE:
            mice = self.mice
        else:
            mice = self.sampled_mice[rng.integers(0, len(self.sampled_mice), self.batch_size)]
        picks = rng.integers(0, self._counts[mice])
        trials = np.array([self.eligible[m][p] for m, p in zip(mice, picks)], np.int64)
        lengths = np.array([self.lengths[m][t] for m, t in zip(mice, trials)], np.int64)
        starts = rng.integers(0, lengths - self.clip_length + 1)
        return np.stack([mice, trials, starts], axis=1).astype(np.int64)

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch: with clips of every mouse in every batch, the steps that take each
        mouse's trials once by the largest mouse (the reference's LongCycler rounds: one batch
        of every mouse per step, smaller mice cycled); with uniform mice, all eligible trials once."""
        if self.mouse_sampling in PER_MOUSE:
            return int(max(-(-count // self.clips_per_mouse) for count in self._counts))
        return int(-(-int(self._counts.sum()) // self.batch_size))
