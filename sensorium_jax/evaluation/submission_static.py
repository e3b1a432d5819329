"""SENSORIUM 2022 (static images) competition files: one CSV per track, mouse and test tier.

    submission/<track>/<mouse>/submission_file_live_test.csv    (tier "test")
    submission/<track>/<mouse>/submission_file_final_test.csv   (tier "final_test")

`<track>` is "sensorium" for a model that sees the image only and "sensorium_plus" for one
that also reads behaviour or the pupil centre (`submission_track`): the 2022 tracks differ in
exactly that, and each track's leaderboard took its own file. Each 2022 track scored one
mouse, and the files have no mouse column, so every mouse gets its own folder.

Columns are the 2022 starter kit's (`sensorium.utility.submission`), one row per trial:
`trial_indices` (the source folder's meta/trials/trial_idx), `image_ids` (its
meta/trials/frame_image_id), `prediction` (one value per neuron, a list) and `neuron_ids` (the
store's unit ids, a list). Lists are written as `[a, b, ...]`, as pandas writes them. When the
source folder is not readable any more, the store's trial ids and stimulus ids are used
instead and `notes()` says so, since the grader matches rows by trial index.

Predictions are in normalized units (divided by the response std), as the 2022 dataloaders
gave them (`submission.SubmissionUnits`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import ml_collections
import numpy as np

from sensorium_jax.evaluation.submission import SubmissionUnits

# Tier -> file name (the starter kit calls the live test tier "live_test").
STATIC_SUBMISSION_TIERS = {
    "test": "submission_file_live_test.csv",
    "final_test": "submission_file_final_test.csv",
}
COLUMNS = ("trial_indices", "image_ids", "prediction", "neuron_ids")
TRACKS = {"stimulus": "sensorium", "behavior": "sensorium_plus"}  # model.track -> submission track


def submission_track(model: ml_collections.ConfigDict) -> str:
    """Pure: the 2022 track a model config belongs to. `model.track` when the model has one;
    else "sensorium_plus" when behaviour or the pupil centre enters the model (as input maps
    or through the shifter), "sensorium" otherwise."""
    track = model.get("track")
    if track is not None:
        if track not in TRACKS:
            raise ValueError(f"model.track = {track!r}: expected one of {', '.join(map(repr, TRACKS))}")
        return TRACKS[track]
    inputs = model.get("inputs") or {}
    shifter = model.get("shifter") or {}
    reads_behavior = bool(inputs.get("behavior")) or bool(inputs.get("pupil_center")) or bool(shifter.get("enabled"))
    return TRACKS["behavior" if reads_behavior else "stimulus"]


def source_trial_field(meta, field: str) -> np.ndarray | None:
    """int64 [trials] from the source folder's meta/trials/<field>.npy (in the folder's trial
    order, which the store keeps), or None when it is not there or does not fit."""
    path = Path(meta.source) / "meta" / "trials" / f"{field}.npy" if meta.source else None
    if path is None or not path.is_file():
        return None
    values = np.load(path, allow_pickle=False)
    if values.shape != (meta.n_trials,) or not np.issubdtype(values.dtype, np.integer):
        return None
    return values.astype(np.int64)


def format_list(values: np.ndarray) -> str:
    """Pure: a 1-D array as the starter kit's CSV cell, `[a, b, ...]`."""
    return json.dumps(np.asarray(values).tolist())


class StaticSubmissionWriter:
    """A `TrialSink` of the tier loop writing the 2022 CSV files of the "test" and "final_test" tiers."""

    def __init__(self, out: str | Path, store, track: str, raw_units: bool = False):
        self.out = Path(out) / track
        self.store = store
        self.track = track
        self._units = SubmissionUnits(store, raw_units)
        self._files: dict[tuple[str, str], tuple[IO[str], csv.writer]] = {}
        self._paths: list[Path] = []
        self._ids: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # mouse -> (trial indices, image ids)
        self._fallback: list[str] = []  # mice whose ids came from the store
        self._rows: dict[str, dict[str, int]] = {}  # tier -> mouse -> rows written

    def __call__(self, mouse: str, tier: str, trials: np.ndarray, predictions: np.ndarray,
                 frame_mask: np.ndarray) -> None:
        if tier not in STATIC_SUBMISSION_TIERS:
            return
        writer = self._writer(mouse, tier)
        trial_indices, image_ids = self._trial_ids(mouse)
        unit_ids = format_list(self.store.meta(mouse).unit_ids)
        for trial, prediction in zip(np.asarray(trials), predictions):
            values = self._units(mouse, np.asarray(prediction[:1]))[0]  # [N]: a static trial's one frame
            writer.writerow([int(trial_indices[trial]), int(image_ids[trial]),
                             format_list(np.asarray(values, np.float32)), unit_ids])
        counts = self._rows.setdefault(tier, {})
        counts[mouse] = counts.get(mouse, 0) + len(trials)

    def _writer(self, mouse: str, tier: str) -> csv.writer:
        if (mouse, tier) not in self._files:
            path = self.out / mouse / STATIC_SUBMISSION_TIERS[tier]
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("w", newline="")
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            self._files[(mouse, tier)] = (handle, writer)
            self._paths.append(path)
        return self._files[(mouse, tier)][1]

    def _trial_ids(self, mouse: str) -> tuple[np.ndarray, np.ndarray]:
        """(trial indices, image ids) of every trial of the mouse: the source folder's, else the store's."""
        if mouse not in self._ids:
            meta = self.store.meta(mouse)
            trial_idx = source_trial_field(meta, "trial_idx")
            image_ids = source_trial_field(meta, meta.dataset_kind.stimulus_id_file.removesuffix(".npy"))
            if trial_idx is None or image_ids is None:
                self._fallback.append(mouse)
            self._ids[mouse] = (meta.trial_ids if trial_idx is None else trial_idx,
                                meta.stimulus_ids if image_ids is None else image_ids)
        return self._ids[mouse]

    def tier_files(self) -> dict[str, str]:
        """Submission tier -> its file's name, under submission/<track>/<mouse>/."""
        return {tier: f"{self.track}/<mouse>/{name}" for tier, name in STATIC_SUBMISSION_TIERS.items()}

    def notes(self) -> list[str]:
        """Caveats about the written files: ids taken from the store instead of the source folder."""
        if not self._fallback:
            return []
        return [f"Submission ids of {', '.join(self._fallback)}: the source folder's meta/trials/trial_idx.npy "
                "or frame_image_id.npy was not readable, so trial_indices are the store's trial ids and "
                "image_ids its stimulus ids; check them against the official folder before uploading."]

    def contents(self) -> dict[str, dict[str, int]]:
        """What was written: submission tier -> mouse -> trials (rows)."""
        return {tier: dict(mice) for tier, mice in self._rows.items()}

    def missing(self, model_mice: Sequence[str]) -> dict[str, list[str]]:
        """Submission tier -> the model's mice without rows in it (empty: a complete submission)."""
        gaps = {tier: [m for m in model_mice if m not in self._rows.get(tier, {})] for tier in STATIC_SUBMISSION_TIERS}
        return {tier: mice for tier, mice in gaps.items() if mice}

    def close(self) -> list[Path]:
        """Finishes the CSV files; returns them."""
        for handle, _ in self._files.values():
            handle.close()
        return list(self._paths)
