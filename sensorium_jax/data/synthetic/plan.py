"""What a synthetic mouse is shown, trial by trial, and the seeds everything is drawn from.

Everything is a pure function of the seed: a mouse's plan depends only on (seed, mouse
index), and the repeated (validation/test) stimuli are shared by all mice of a seed.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from sensorium_jax.data.kinds import STATIC, VIDEO
from sensorium_jax.data.synthetic import stimuli
from sensorium_jax.data.synthetic.presets import Preset

# Seeds per tier; the order (and so every code) is fixed: changing it changes the data.
TIER_CODES = {tier: i for i, tier in enumerate(("train",) + VIDEO.repeated_tiers + STATIC.repeated_tiers)}


@dataclasses.dataclass(frozen=True)
class Trial:
    """One planned presentation."""

    tier: str
    stimulus: int  # index among the tier's distinct stimuli
    repeat: int
    stimulus_type: str
    stimulus_key: str  # names the stimulus; equal keys = identical stimulus
    length: int

    @property
    def stimulus_id(self) -> str:
        return hashlib.sha1(self.stimulus_key.encode()).hexdigest()[:20]


def rng_for(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, key)]))


def mouse_name(seed: int, index: int, static: bool = False) -> str:
    return f"{'static' if static else 'dynamic'}-synthetic-{seed}-{index}"


def neuron_count(preset: Preset, seed: int, index: int) -> int:
    """Depends on (seed, index) only; consecutive mice always differ when the range allows."""
    low, high = preset.neurons
    span = high - low + 1
    base = int(rng_for(seed, 7).integers(0, span))
    return low + (base + index * (span // 2 + 1)) % span


def video_plan(preset: Preset, seed: int, index: int) -> list[Trial]:
    """All trials of a video mouse in presentation order (tiers interleaved, like a recording)."""
    rng = rng_for(seed, index, 1)
    lengths = np.full(preset.train_trials, preset.frames)
    long = rng.choice(preset.train_trials, min(preset.long_trials, preset.train_trials), replace=False)
    lengths[long] = rng.integers(preset.frames + 1, preset.max_frames + 1, long.size)
    trials = [
        Trial("train", j, 0, "natural", f"{seed}/{index}/train/{j}", int(lengths[j]))
        for j in range(preset.train_trials)
    ]
    for tier, count in preset.repeated_stimuli.items():
        for j in range(count):
            kind = _ood_type(tier, j) if tier.endswith("bonus") else "natural"
            for r in range(preset.repeats):
                trials.append(Trial(tier, j, r, kind, f"{seed}/{tier}/{j}", preset.frames))
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def _ood_type(tier: str, j: int) -> str:
    start = 0 if tier.startswith("live") else 3
    return stimuli.OOD_TYPES[(start + j) % len(stimuli.OOD_TYPES)]


def static_plan(preset: Preset, seed: int, index: int) -> list[Trial]:
    rng = rng_for(seed, index, 1)
    trials = [Trial("train", j, 0, "natural", f"{seed}/{index}/image/{j}", 1) for j in range(preset.static_train)]
    for tier, count in preset.static_repeated.items():
        for j in range(count):
            for r in range(preset.repeats):
                trials.append(Trial(tier, j, r, "natural", f"{seed}/image/{tier}/{j}", 1))
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def stimulus_rng(seed: int, trial: Trial) -> np.random.Generator:
    digest = hashlib.sha1(trial.stimulus_key.encode()).digest()
    return rng_for(seed, 2, int.from_bytes(digest[:8], "little"))


def trial_rng(seed: int, index: int, trial: Trial) -> np.random.Generator:
    return rng_for(seed, index, 3, TIER_CODES[trial.tier], trial.stimulus, trial.repeat)


def trial_video(seed: int, trial: Trial) -> np.ndarray:
    """[T, H, W] float32 frames of a planned trial (identical for repeats of one stimulus)."""
    return stimuli.make_clip(trial.stimulus_type, stimulus_rng(seed, trial), trial.length)
