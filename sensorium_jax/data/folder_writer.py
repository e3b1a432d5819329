"""Writes mouse folders in the official SENSORIUM formats, one trial at a time.

Used by the synthetic digital mouse and by tests that need small (or deliberately broken)
folders. Memory stays bounded: each trial goes to disk as it arrives and the statistics
under `meta/statistics` are accumulated on the fly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STATISTIC_GROUPS = ("all", "stimulus_frame")
STATISTICS_TIERS = ("train", "oracle", "validation")


class _RunningStatistics:
    """Per-feature mean/std/min/max in float64 and a median over a bounded subsample."""

    def __init__(self, max_samples: int = 4096):
        self.count = 0
        self.total = None
        self.total_sq = None
        self.minimum = None
        self.maximum = None
        self.samples: list[np.ndarray] = []
        self.n_samples = 0
        self.max_samples = max_samples

    def update(self, values: np.ndarray) -> None:
        """values: [samples, features]."""
        values = np.asarray(values, np.float64)
        if values.size == 0:
            return
        if self.total is None:
            features = values.shape[1:]
            self.total = np.zeros(features)
            self.total_sq = np.zeros(features)
            self.minimum = np.full(features, np.inf)
            self.maximum = np.full(features, -np.inf)
        self.count += values.shape[0]
        self.total += values.sum(0)
        self.total_sq += np.square(values).sum(0)
        self.minimum = np.minimum(self.minimum, values.min(0))
        self.maximum = np.maximum(self.maximum, values.max(0))
        if self.n_samples < self.max_samples:
            stride = max(1, values.shape[0] // 16)
            # a copy: a strided view would keep every trial's whole array alive
            kept = values[::stride][: self.max_samples - self.n_samples].copy()
            self.samples.append(kept)
            self.n_samples += kept.shape[0]

    def result(self) -> dict[str, np.ndarray]:
        if self.total is None:
            raise ValueError("no trial contributed to the statistics")
        mean = self.total / self.count
        var = np.maximum(self.total_sq / self.count - mean**2, 0.0)
        median = np.median(np.concatenate(self.samples, 0), axis=0)
        return {
            "mean": mean.astype(np.float32),
            "std": np.sqrt(var).astype(np.float32),
            "min": self.minimum.astype(np.float32),
            "max": self.maximum.astype(np.float32),
            "median": np.asarray(median, np.float32),
        }


class MouseFolderWriter:
    """Writes `data/<key>/<i>.npy` per trial and `meta/` at `finish()`.

    kind="video" (SENSORIUM 2023): videos H x W x T, responses N x T, behavior 2 x T,
    pupil_center 2 x T, all NaN-padded to `padded_length` frames.
    kind="static" (SENSORIUM 2022): images 1 x H x W, responses (N,), behavior (3,),
    pupil_center (2,).
    """

    def __init__(
        self,
        root: str | Path,
        kind: str = "video",
        padded_length: int | None = None,
        median_samples: int = 4096,
    ):
        if kind not in ("video", "static"):
            raise ValueError(f"kind must be 'video' or 'static', got {kind!r}")
        self.root = Path(root)
        self.kind = kind
        self.padded_length = padded_length
        self.stimulus_key = "videos" if kind == "video" else "images"
        self.keys = (self.stimulus_key, "responses", "behavior", "pupil_center")
        for key in self.keys:
            (self.root / "data" / key).mkdir(parents=True, exist_ok=True)
        self.tiers: list[str] = []
        self.stimulus_ids: list[str] = []
        # median_samples: rows kept per statistic for the median (memory: rows x features x 8 B)
        self.statistics = {key: _RunningStatistics(median_samples) for key in self.keys}

    @property
    def n_trials(self) -> int:
        return len(self.tiers)

    def add_trial(
        self,
        stimulus: np.ndarray,
        responses: np.ndarray,
        behavior: np.ndarray,
        pupil_center: np.ndarray,
        tier: str,
        stimulus_id: str | int,
    ) -> int:
        """Adds one trial in the official on-disk orientation; returns its index."""
        index = self.n_trials
        arrays = {
            self.stimulus_key: np.asarray(stimulus, np.float32),
            "responses": np.asarray(responses, np.float32),
            "behavior": np.asarray(behavior, np.float32),
            "pupil_center": np.asarray(pupil_center, np.float32),
        }
        if self.kind == "video":
            length = arrays["videos"].shape[-1]
            padded = self.padded_length or length
            if length > padded:
                raise ValueError(f"trial of {length} frames exceeds padded_length {padded}")
            for key, value in arrays.items():
                pad = [(0, 0)] * (value.ndim - 1) + [(0, padded - length)]
                arrays[key] = np.pad(value, pad, constant_values=np.nan)
            if tier in STATISTICS_TIERS:
                as_samples = {
                    "videos": arrays["videos"][..., :length].reshape(-1, 1),
                    "responses": arrays["responses"][:, :length].T,
                    "behavior": arrays["behavior"][:, :length].T,
                    "pupil_center": arrays["pupil_center"][:, :length].T,
                }
                for key, samples in as_samples.items():
                    self.statistics[key].update(samples)
        elif tier in STATISTICS_TIERS:
            self.statistics["images"].update(arrays["images"].reshape(-1, 1))
            for key in ("responses", "behavior", "pupil_center"):
                self.statistics[key].update(arrays[key][None])
        for key, value in arrays.items():
            np.save(self.root / "data" / key / f"{index}.npy", value)
        self.tiers.append(tier)
        self.stimulus_ids.append(str(stimulus_id))
        return index

    def finish(self, unit_ids: np.ndarray, coordinates: np.ndarray) -> None:
        """Writes the trial, neuron and statistics metadata."""
        trials = self.root / "meta" / "trials"
        trials.mkdir(parents=True, exist_ok=True)
        np.save(trials / "tiers.npy", np.asarray(self.tiers))
        np.save(trials / "trial_idx.npy", np.arange(self.n_trials))
        if self.kind == "video":
            np.save(trials / "condition_hash.npy", np.asarray(self.stimulus_ids))
        else:
            image_ids = {s: i for i, s in enumerate(dict.fromkeys(self.stimulus_ids))}
            np.save(trials / "frame_image_id.npy", np.asarray([image_ids[s] for s in self.stimulus_ids]))
        neurons = self.root / "meta" / "neurons"
        neurons.mkdir(parents=True, exist_ok=True)
        np.save(neurons / "unit_ids.npy", np.asarray(unit_ids, np.int64))
        np.save(neurons / "cell_motor_coordinates.npy", np.asarray(coordinates, np.float32))
        for key, running in self.statistics.items():
            values = running.result()
            if key in ("videos", "images"):
                values = {name: value.reshape(()) for name, value in values.items()}
            for group in STATISTIC_GROUPS:
                folder = self.root / "meta" / "statistics" / key / group
                folder.mkdir(parents=True, exist_ok=True)
                for name, value in values.items():
                    np.save(folder / f"{name}.npy", value)
