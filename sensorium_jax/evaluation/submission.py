"""SENSORIUM 2023 competition files: one parquet (brotli) per test tier, zipped per track
(the 2022 static-image CSVs are `submission_static`'s).

Each row is one trial: `mouse`, `trial_indices` (the trial's id in the official folder),
`prediction` (neurons x frames after the burn-in) and `neuron_ids`. Rows are written as
trials stream by, so memory stays bounded by one batch.

The burn-in is always the data kind's (the competition's 50 frames for video), whatever a
config uses for validation: the leaderboard expects exactly that many frames dropped. The
predictions arrive in the store's neuron order (the tier loop matched them by unit id), so
`neuron_ids` are the store's unit ids. `contents()` and `missing(...)` say what was written,
so a partial submission is never silent.

Predictions arrive in the units of the store's batches (`data.datasets.NormalizedStore`): a
model trained with `data.normalization="none"` predicts raw responses, which are divided by
the response std here (per frame and neuron when the source has per-frame statistics, as the
first-place solution's submission does), so every submission is in normalized units.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sensorium_jax.data import normalization as norm_lib
from sensorium_jax.data.datasets import mouse_normalization
from sensorium_jax.evaluation.scoring import default_burn_in

SUBMISSION_TIERS = {
    "live_test_main": ("predictions_live_main.parquet.brotli", "main"),
    "final_test_main": ("predictions_final_main.parquet.brotli", "main"),
    "live_test_bonus": ("predictions_live_test_bonus_ood.parquet.brotli", "bonus"),
    "final_test_bonus": ("predictions_final_test_bonus_ood.parquet.brotli", "bonus"),
}
SCHEMA = pa.schema(
    [
        ("mouse", pa.string()),
        ("trial_indices", pa.int64()),
        ("prediction", pa.list_(pa.list_(pa.float32()))),
        ("neuron_ids", pa.list_(pa.int64())),
    ]
)


class SubmissionUnits:
    """Predictions from the units of the store's batches to a submission's (normalized, or
    recorded with `raw_units`); each mouse's normalization read once."""

    def __init__(self, store, raw_units: bool = False):
        self.store, self.raw_units = store, raw_units
        self._norms: dict[str, norm_lib.Normalization] = {}

    def __call__(self, mouse: str, prediction: np.ndarray) -> np.ndarray:
        """One trial's predictions [T, N] from frame 0, in the file's units."""
        if mouse not in self._norms:
            self._norms[mouse] = mouse_normalization(self.store, mouse)
        norm = self._norms[mouse]
        if norm.applied != self.raw_units:
            return prediction
        norm = norm.window(0, prediction.shape[0], where=self.store.path / mouse)
        return prediction * (norm.response_scale if self.raw_units else norm.response_precision)


class SubmissionWriter:
    """A `TrialSink` of the tier loop that writes the submission tiers' rows."""

    def __init__(self, out: str | Path, store, raw_units: bool = False):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.burn_in = default_burn_in(store)  # the competition's, never a validation setting
        self.raw_units = raw_units
        self._units = SubmissionUnits(store, raw_units)
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._rows: dict[str, dict[str, int]] = {}  # tier -> mouse -> rows written

    def __call__(self, mouse: str, tier: str, trials: np.ndarray, predictions: np.ndarray, frame_mask: np.ndarray) -> None:
        if tier not in SUBMISSION_TIERS:
            return
        meta = self.store.meta(mouse)
        rows = {"mouse": [], "trial_indices": [], "prediction": [], "neuron_ids": []}
        for trial, prediction, valid in zip(trials, predictions, frame_mask):
            length = int(np.asarray(valid).sum())
            kept = self._units(mouse, prediction[:length])[self.burn_in :]  # [T - burn_in, N]
            rows["mouse"].append(mouse)
            rows["trial_indices"].append(int(meta.trial_ids[int(trial)]))
            rows["prediction"].append(np.ascontiguousarray(kept.T, np.float32).tolist())
            rows["neuron_ids"].append(meta.unit_ids.tolist())
        table = pa.Table.from_pydict(rows, schema=SCHEMA)
        if tier not in self._writers:
            name = SUBMISSION_TIERS[tier][0]
            self._writers[tier] = pq.ParquetWriter(self.out / name, SCHEMA, compression="brotli")
        self._writers[tier].write_table(table)
        counts = self._rows.setdefault(tier, {})
        counts[mouse] = counts.get(mouse, 0) + len(rows["mouse"])

    def tier_files(self) -> dict[str, str]:
        """Submission tier -> its file's name (what the report lists, written or not)."""
        return {tier: name for tier, (name, _) in SUBMISSION_TIERS.items()}

    def notes(self) -> list[str]:
        """Caveats about the written files (none for this format)."""
        return []

    def contents(self) -> dict[str, dict[str, int]]:
        """What was written: submission tier -> mouse -> trials (rows)."""
        return {tier: dict(mice) for tier, mice in self._rows.items()}

    def missing(self, model_mice: Sequence[str]) -> dict[str, list[str]]:
        """Submission tier -> the model's mice without rows in it (empty: a complete submission)."""
        gaps = {tier: [m for m in model_mice if m not in self._rows.get(tier, {})] for tier in SUBMISSION_TIERS}
        return {tier: mice for tier, mice in gaps.items() if mice}

    def close(self) -> list[Path]:
        """Finishes the parquet files and zips them per track; returns the zip files."""
        for writer in self._writers.values():
            writer.close()
        zips = []
        for track in ("main", "bonus"):
            files = [self.out / name for tier, (name, t) in SUBMISSION_TIERS.items()
                     if t == track and tier in self._writers]
            if files:
                archive = self.out / f"submission_{track}.zip"
                with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
                    for file in files:
                        handle.write(file, arcname=file.name)
                zips.append(archive)
        return zips
