"""The synthetic animal: its neurons, calibrated noise, and the simulation of its responses."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sensorium_jax.data.kinds import STATIC, VIDEO
from sensorium_jax.data.synthetic import neurons, stimuli
from sensorium_jax.data.synthetic.plan import mouse_name, neuron_count, rng_for
from sensorium_jax.data.synthetic.presets import Preset


@dataclasses.dataclass
class Mouse:
    """One synthetic animal: its neurons, behaviour model and the calibrated noise."""

    name: str
    kind: str  # "video" | "static"
    population: dict[str, np.ndarray]
    behavior_model: dict[str, Any]
    readout: neurons.SpatialReadout

    @property
    def n_neurons(self) -> int:
        return int(self.population["position"].shape[0])


def build_mouse(preset: Preset, seed: int, index: int, static: bool = False) -> Mouse:
    """Samples the population and calibrates drive normalization and noise on natural stimuli."""
    rng = rng_for(seed, index, 0)
    population = neurons.sample_population(
        rng, neuron_count(preset, seed, index), preset.bank, reliability=preset.reliability
    )
    model = neurons.sample_mouse_behavior_model(rng)
    readout = neurons.SpatialReadout(preset.bank, population["position"], population["channel"])
    kind = STATIC if static else VIDEO
    mouse = Mouse(mouse_name(seed, index, static), kind.name, population, model, readout)
    calibration = rng_for(seed, index, 4)
    if static:
        _calibrate_static(mouse, calibration, max(128, min(512, preset.static_train)))
    else:
        _calibrate_video(mouse, calibration, preset.calibration_clips, preset.frames)
    return mouse


def _calibrate_video(mouse: Mouse, rng: np.random.Generator, n_clips: int, n_frames: int) -> None:
    """Drive statistics and noise scale from independent natural clips (behaviour included)."""
    p = mouse.population
    skip = neurons.KERNEL_LENGTH
    drives, gains = [], []
    for _ in range(n_clips):
        frames = stimuli.natural_clip(rng, n_frames)
        behavior, pupil_center = neurons.video_behavior(rng, n_frames, mouse.behavior_model)
        shift = neurons.eye_shift(pupil_center.T, mouse.behavior_model)
        z = neurons.temporal_filter(mouse.readout(frames, shift), p["temporal_kernel"])
        drives.append(neurons.drive(z, p)[skip:])
        gains.append(neurons.behavior_gain(behavior[0], behavior[1], p, mouse.behavior_model)[skip:])
    drive = np.concatenate(drives)
    p["drive_mean"] = _drive_mean(drive, p)
    p["drive_std"] = np.maximum(drive.std(0), 1e-6).astype(np.float32)
    rates = []
    for d, gain in zip(drives, gains):
        lam = gain * (neurons.stimulus_rate((d - p["drive_mean"]) / p["drive_std"], p) + p["baseline"])
        rates.append(neurons.calcium(lam, p["calcium_tau"], lam[0])[skip:])
    kept = neurons.calcium_noise_factor(p["calcium_tau"])
    p["noise_scale"] = _noise_scale(np.concatenate(rates), p["target_reliability"], kept)


def _calibrate_static(mouse: Mouse, rng: np.random.Generator, n_images: int) -> None:
    p = mouse.population
    images = np.stack([stimuli.natural_image(rng) for _ in range(n_images)])
    behavior, pupil_center = neurons.static_behavior(rng, n_images, mouse.behavior_model)
    drive = neurons.drive(mouse.readout(images, neurons.eye_shift(pupil_center, mouse.behavior_model)), p)
    p["drive_mean"] = _drive_mean(drive, p)
    p["drive_std"] = np.maximum(drive.std(0), 1e-6).astype(np.float32)
    rate = _static_rates(mouse, drive, behavior)
    p["noise_scale"] = _noise_scale(rate, p["target_reliability"], np.ones(mouse.n_neurons))


def _drive_mean(drive: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Complex cells: the mean amplitude; simple cells: 0 (their drive is signed, mean ~0),
    so a gray screen gives no stimulus drive at all (thresholds are >= 0)."""
    mean = drive.mean(0)
    mean[p["cell_type"] == neurons.SIMPLE] = 0
    return mean.astype(np.float32)


def _noise_scale(rate: np.ndarray, reliability: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Noise scale phi giving correlation ~`reliability` between rate and response.

    Response noise variance ~ phi * mean rate * kept (what the calcium smoothing keeps), so
    corr^2 = var(rate) / (var(rate) + phi * mean * kept).
    """
    mean = np.maximum(rate.mean(0).astype(np.float64), 1e-6)
    variance = np.maximum(rate.var(0).astype(np.float64), 1e-6 * mean**2)
    rho = reliability.astype(np.float64)
    return (variance * (1 / rho**2 - 1) / (mean * kept)).astype(np.float32)


def _static_rates(mouse: Mouse, drive: np.ndarray, behavior: np.ndarray) -> np.ndarray:
    p = mouse.population
    gain = neurons.behavior_gain(behavior[:, 0], behavior[:, 2], p, mouse.behavior_model)
    return gain * (neurons.stimulus_rate((drive - p["drive_mean"]) / p["drive_std"], p) + p["baseline"])


def simulate_video_trial(
    mouse: Mouse, frames: np.ndarray, behavior: np.ndarray, pupil_center: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(noise-free rate, noisy response), each [T, N] float32, for frames [T, H, W].

    behavior [2, T] (pupil, running) and pupil_center [2, T] in the on-disk orientation.
    """
    p = mouse.population
    shift = neurons.eye_shift(pupil_center.T, mouse.behavior_model)
    z = neurons.temporal_filter(mouse.readout(frames, shift), p["temporal_kernel"])
    u = (neurons.drive(z, p) - p["drive_mean"]) / p["drive_std"]
    gain = neurons.behavior_gain(behavior[0], behavior[1], p, mouse.behavior_model)
    lam = gain * (neurons.stimulus_rate(u, p) + p["baseline"])
    spikes = neurons.compound_poisson(rng, lam, p["noise_scale"])
    resting = gain[0] * p["baseline"]  # the gray screen before the trial
    both = neurons.calcium(np.concatenate([lam, spikes], 1), np.tile(p["calcium_tau"], 2), np.tile(resting, 2))
    n = mouse.n_neurons
    return both[:, :n], both[:, n:]


def simulate_static_trials(
    mouse: Mouse, images: np.ndarray, behavior: np.ndarray, pupil_center: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(rate, response) [B, N] for images [B, H, W], behavior [B, 3], pupil_center [B, 2]."""
    p = mouse.population
    shift = neurons.eye_shift(pupil_center, mouse.behavior_model)
    rate = _static_rates(mouse, neurons.drive(mouse.readout(images, shift), p), behavior)
    response = neurons.compound_poisson(rng, rate, p["noise_scale"])
    return rate.astype(np.float32), response
