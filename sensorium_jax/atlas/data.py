"""What the atlas scores against: one stimulus set, and per animal its repeated responses and areas."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Recording:
    """One animal's responses to the shared stimuli.

    repeats: [R, n_stimuli, neurons], NaN where a stimulus has fewer repeats (R = 1: no ceiling).
    areas: [neurons] area labels; unit_ids: [neurons].
    """

    name: str
    repeats: np.ndarray
    areas: np.ndarray
    unit_ids: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Responses averaged over repeats, [n_stimuli, neurons]."""
        return np.nanmean(self.repeats, axis=0)


@dataclasses.dataclass
class AtlasData:
    """stimuli: [n, H, W] images in 0-255, or [n, F, H, W] clips (features averaged over frames)."""

    stimuli: np.ndarray
    recordings: list[Recording]
    stimulus_ids: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        n = self.stimuli.shape[0]
        for rec in self.recordings:
            if rec.repeats.shape[1] != n:
                raise ValueError(f"{rec.name}: responses to {rec.repeats.shape[1]} stimuli, expected {n}")
            if rec.areas.shape[0] != rec.repeats.shape[2]:
                raise ValueError(f"{rec.name}: {rec.areas.shape[0]} area labels for {rec.repeats.shape[2]} neurons")

    @property
    def areas(self) -> list[str]:
        return list(dict.fromkeys(a for rec in self.recordings for a in rec.areas.tolist()))
