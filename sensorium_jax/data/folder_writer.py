"""Writes mouse folders in the official SENSORIUM formats, one trial at a time.

Used by the synthetic digital mouse and by tests that need small (or deliberately broken)
folders. Memory stays bounded: each trial goes to disk as it arrives and the statistics
under `meta/statistics` are accumulated on the fly, per frame like the 2023 release
(`statistics="per_frame"`, video only) or per neuron like older folders (`"per_neuron"`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sensorium_jax.data.kinds import STIMULUS_TYPE_FILE, UNKNOWN_STIMULUS_TYPE, as_kind
from sensorium_jax.data.statistics import LAYOUTS, PER_FRAME, PER_NEURON, STATISTIC_GROUPS

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


class _PerFrameStatistics:
    """Per-frame (last axis) mean/std/min/max over trials, in float64, NaN where no trial
    reached a frame; the median over the first `median_trials` trials."""

    def __init__(self, median_trials: int):
        self.median_trials = median_trials
        self.total = self.total_sq = self.minimum = self.maximum = self.count = None
        self.samples: list[np.ndarray] = []

    def update(self, values: np.ndarray) -> None:
        """values: [..., frames] of one trial (its valid frames only; a prefix of the padding)."""
        values = np.asarray(values, np.float64)
        frames = values.shape[-1]
        if self.total is None:
            raise ValueError("call start(shape) first")
        if frames > self.count.shape[0]:
            raise ValueError(f"trial of {frames} frames exceeds the padded length {self.count.shape[0]}")
        window = (..., slice(0, frames))
        self.count[:frames] += 1
        self.total[window] += values
        self.total_sq[window] += np.square(values)
        np.minimum(self.minimum[window], values, out=self.minimum[window])
        np.maximum(self.maximum[window], values, out=self.maximum[window])
        if len(self.samples) < self.median_trials:
            padded = np.full(self.total.shape, np.nan, np.float32)
            padded[window] = values
            self.samples.append(padded)

    def start(self, shape: tuple[int, ...]) -> None:
        if self.total is None:
            self.total, self.total_sq = np.zeros(shape), np.zeros(shape)
            self.minimum, self.maximum = np.full(shape, np.inf), np.full(shape, -np.inf)
            self.count = np.zeros(shape[-1], np.int64)

    def result(self) -> dict[str, np.ndarray]:
        if self.total is None or not self.count.any():
            raise ValueError("no trial contributed to the statistics")
        seen = self.count > 0
        count = np.maximum(self.count, 1)
        mean = self.total / count
        var = np.maximum(self.total_sq / count - mean**2, 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # frames no sampled trial reached
            median = np.nanmedian(np.stack(self.samples), axis=0)
        values = {"mean": mean, "std": np.sqrt(var), "min": self.minimum, "max": self.maximum, "median": median}
        return {name: np.where(seen, value, np.nan).astype(np.float32) for name, value in values.items()}


class MouseFolderWriter:
    """Writes `data/<key>/<i>.npy` per trial and `meta/` at `finish()`.

    kind="video" (SENSORIUM 2023): videos H x W x T, responses N x T, behavior 2 x T,
    pupil_center 2 x T, all NaN-padded to `padded_length` frames.
    kind="static" (SENSORIUM 2022): images 1 x H x W, responses (N,), behavior (3,),
    pupil_center (2,).
    statistics: "per_frame" (the 2023 release: [H, W, T], [N, T], [2, T]; needs
    `padded_length`) or "per_neuron" (scalar, [N], [k]); default: per frame for video, per
    neuron for static data (which has no frames). Trials given a `stimulus_type` are listed
    in meta/trials/stimulus_type.npy ("unknown" for those without).
    """

    def __init__(
        self,
        root: str | Path,
        kind: str = "video",
        padded_length: int | None = None,
        median_samples: int = 4096,
        statistics: str | None = None,
    ):
        self.kind = as_kind(kind).name
        self.dataset_kind = as_kind(kind)
        layout = statistics or (PER_FRAME if self.dataset_kind.is_video else PER_NEURON)
        if layout not in LAYOUTS or (layout == PER_FRAME and not self.dataset_kind.is_video):
            raise ValueError(f"statistics must be one of {LAYOUTS} (per_frame for video only), got {statistics!r}")
        if layout == PER_FRAME and padded_length is None:
            raise ValueError("per-frame statistics need padded_length (the statistics' T)")
        self.root = Path(root)
        self.padded_length = padded_length
        self.statistics_layout = layout
        self.stimulus_key = self.dataset_kind.stimulus_key
        self.keys = self.dataset_kind.array_keys
        for key in self.keys:
            (self.root / "data" / key).mkdir(parents=True, exist_ok=True)
        self.tiers: list[str] = []
        self.stimulus_ids: list[str] = []
        self.stimulus_types: list[str | None] = []
        # median_samples: rows kept per statistic for the median (memory: rows x features x 8 B);
        # per frame, whole trials within about the same memory
        if layout == PER_FRAME:
            trials = max(4, 2 * median_samples // padded_length)
            self.statistics = {key: _PerFrameStatistics(trials) for key in self.keys}
        else:
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
        stimulus_type: str | None = None,
    ) -> int:
        """Adds one trial in the official on-disk orientation; returns its index."""
        index = self.n_trials
        arrays = {
            self.stimulus_key: np.asarray(stimulus, np.float32),
            "responses": np.asarray(responses, np.float32),
            "behavior": np.asarray(behavior, np.float32),
            "pupil_center": np.asarray(pupil_center, np.float32),
        }
        if self.dataset_kind.is_video:
            length = arrays[self.stimulus_key].shape[-1]
            padded = self.padded_length or length
            if length > padded:
                raise ValueError(f"trial of {length} frames exceeds padded_length {padded}")
            for key, value in arrays.items():
                pad = [(0, 0)] * (value.ndim - 1) + [(0, padded - length)]
                arrays[key] = np.pad(value, pad, constant_values=np.nan)
            if tier in STATISTICS_TIERS and self.statistics_layout == PER_FRAME:
                for key, value in arrays.items():
                    self.statistics[key].start(value.shape)
                    self.statistics[key].update(value[..., :length])
            elif tier in STATISTICS_TIERS:
                as_samples = {
                    self.stimulus_key: arrays[self.stimulus_key][..., :length].reshape(-1, 1),
                    "responses": arrays["responses"][:, :length].T,
                    "behavior": arrays["behavior"][:, :length].T,
                    "pupil_center": arrays["pupil_center"][:, :length].T,
                }
                for key, samples in as_samples.items():
                    self.statistics[key].update(samples)
        elif tier in STATISTICS_TIERS:
            self.statistics[self.stimulus_key].update(arrays[self.stimulus_key].reshape(-1, 1))
            for key in ("responses", "behavior", "pupil_center"):
                self.statistics[key].update(arrays[key][None])
        for key, value in arrays.items():
            np.save(self.root / "data" / key / f"{index}.npy", value)
        self.tiers.append(tier)
        self.stimulus_ids.append(str(stimulus_id))
        self.stimulus_types.append(stimulus_type)
        return index

    def finish(self, unit_ids: np.ndarray, coordinates: np.ndarray) -> None:
        """Writes the trial, neuron and statistics metadata."""
        trials = self.root / "meta" / "trials"
        trials.mkdir(parents=True, exist_ok=True)
        np.save(trials / "tiers.npy", np.asarray(self.tiers))
        np.save(trials / "trial_idx.npy", np.arange(self.n_trials))
        id_file = self.dataset_kind.stimulus_id_file
        if self.dataset_kind.is_video:
            np.save(trials / id_file, np.asarray(self.stimulus_ids))
        else:
            image_ids = {s: i for i, s in enumerate(dict.fromkeys(self.stimulus_ids))}
            np.save(trials / id_file, np.asarray([image_ids[s] for s in self.stimulus_ids]))
        if any(t is not None for t in self.stimulus_types):
            types = [UNKNOWN_STIMULUS_TYPE if t is None else str(t) for t in self.stimulus_types]
            np.save(trials / STIMULUS_TYPE_FILE, np.asarray(types))
        neurons = self.root / "meta" / "neurons"
        neurons.mkdir(parents=True, exist_ok=True)
        np.save(neurons / "unit_ids.npy", np.asarray(unit_ids, np.int64))
        np.save(neurons / "cell_motor_coordinates.npy", np.asarray(coordinates, np.float32))
        for key, running in self.statistics.items():
            values = running.result()
            if key == self.stimulus_key and self.statistics_layout == PER_NEURON:
                values = {name: value.reshape(()) for name, value in values.items()}
            for group in STATISTIC_GROUPS:
                folder = self.root / "meta" / "statistics" / key / group
                folder.mkdir(parents=True, exist_ok=True)
                for name, value in values.items():
                    np.save(folder / f"{name}.npy", value)
