"""Tiny valid official-format mouse folders for tests (import as `from folders import ...`).

Built with `MouseFolderWriter`, deterministic from a seed, a few kilobytes each: variable
trial lengths, every tier, and repeated stimuli in the oracle/validation and test tiers.
Tests that need a broken folder write a valid one and then damage a single file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sensorium_jax.data.folder_writer import MouseFolderWriter

# (tier, stimulus label, valid frames); equal labels are repeats of one stimulus clip.
VIDEO_PLAN = (
    ("train", "clip-a", 10),
    ("train", "clip-b", 8),
    ("oracle", "clip-c", 9),
    ("train", "clip-d", 12),
    ("oracle", "clip-c", 9),
    ("live_test_main", "clip-e", 7),
    ("train", "clip-f", 11),
    ("oracle", "clip-c", 9),
    ("live_test_main", "clip-e", 7),
    ("final_test_bonus", "clip-g", 6),
    ("none", "clip-h", 8),
)
VIDEO_PADDED_LENGTH = 12

# (tier, image label)
STATIC_PLAN = (
    ("train", 0),
    ("validation", 1),
    ("train", 2),
    ("test", 3),
    ("validation", 1),
    ("train", 4),
    ("test", 3),
    ("final_test", 5),
    ("train", 6),
)


def video_trials(n_neurons: int = 5, frame_shape: tuple[int, int] = (4, 6), seed: int = 0) -> list[dict]:
    """The trials `write_video_folder` writes, unpadded, in the on-disk orientation."""
    rng = np.random.default_rng(seed)
    clips: dict[str, np.ndarray] = {}
    trials = []
    for tier, label, length in VIDEO_PLAN:
        if label not in clips:
            clips[label] = rng.uniform(0, 255, (*frame_shape, length)).astype(np.float32)
        trials.append(
            {
                "stimulus": clips[label],
                "responses": rng.gamma(2.0, 1.0, (n_neurons, length)).astype(np.float32),
                "behavior": rng.normal(5.0, 1.0, (2, length)).astype(np.float32),
                "pupil_center": rng.normal(0.0, 3.0, (2, length)).astype(np.float32),
                "tier": tier,
                "stimulus_id": label,
            }
        )
    return trials


def static_trials(
    n_neurons: int = 5, image_shape: tuple[int, int, int] = (1, 9, 16), seed: int = 0
) -> list[dict]:
    """The trials `write_static_folder` writes, in the on-disk orientation."""
    rng = np.random.default_rng(seed)
    images: dict[int, np.ndarray] = {}
    trials = []
    for tier, label in STATIC_PLAN:
        if label not in images:
            images[label] = rng.uniform(0, 255, image_shape).astype(np.float32)
        trials.append(
            {
                "stimulus": images[label],
                "responses": rng.gamma(2.0, 1.0, (n_neurons,)).astype(np.float32),
                "behavior": rng.normal(5.0, 1.0, (3,)).astype(np.float32),
                "pupil_center": rng.normal(0.0, 3.0, (2,)).astype(np.float32),
                "tier": tier,
                "stimulus_id": label,
            }
        )
    return trials


def _write(writer: MouseFolderWriter, trials: list[dict], n_neurons: int, seed: int) -> None:
    for trial in trials:
        writer.add_trial(**trial)
    rng = np.random.default_rng(seed + 1)
    coordinates = rng.uniform(0, 500, (n_neurons, 3)).astype(np.float32)
    writer.finish(unit_ids=np.arange(n_neurons) + 100, coordinates=coordinates)


def write_video_folder(
    root: str | Path,
    name: str = "dynamic-tiny-Video",
    n_neurons: int = 5,
    frame_shape: tuple[int, int] = (4, 6),
    seed: int = 0,
    statistics: str = "per_frame",
) -> Path:
    """A valid SENSORIUM 2023 video folder `root/name` with the trials of `video_trials`;
    statistics per frame like the release, or per neuron like older folders."""
    path = Path(root) / name
    writer = MouseFolderWriter(path, kind="video", padded_length=VIDEO_PADDED_LENGTH, statistics=statistics)
    _write(writer, video_trials(n_neurons, frame_shape, seed), n_neurons, seed)
    return path


def write_static_folder(
    root: str | Path,
    name: str = "static-tiny",
    n_neurons: int = 5,
    image_shape: tuple[int, int, int] = (1, 9, 16),
    seed: int = 0,
) -> Path:
    """A valid SENSORIUM 2022 static folder `root/name` with the trials of `static_trials`."""
    path = Path(root) / name
    writer = MouseFolderWriter(path, kind="static")
    _write(writer, static_trials(n_neurons, image_shape, seed), n_neurons, seed)
    return path
