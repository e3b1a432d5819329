"""Reads and validates official SENSORIUM mouse folders (2023 video, 2022 static images).

`read_mouse_folder` checks every file before anything downstream trusts the folder, so a
bad download fails with one line naming the file, the field and what was expected.
Arrays are memory-mapped: memory stays bounded by one trial whatever the folder size.

CLI: `python -m sensorium_jax.data.raw FOLDER...` validates folders and prints a summary.
The statistics may come per frame (the 2023 release) or per neuron; see `statistics`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sensorium_jax.data import cli
from sensorium_jax.data import statistics as stats_lib
from sensorium_jax.data.kinds import (
    STATIC,
    STIMULUS_TYPE_FILE,
    UNKNOWN_STIMULUS_TYPE,
    VIDEO,
    DatasetKind,
    kind_named,
)
from sensorium_jax.data.trial_checks import check_trial
from sensorium_jax.data.validation import (
    INTEGER_KINDS,
    NUMERIC_KINDS,
    STRING_KINDS,
    first_duplicate,
    load_npy,
    load_numeric,
    require_dim,
    require_kind,
    require_length,
    require_ndim,
)
from sensorium_jax.errors import InputDataError


@dataclasses.dataclass(frozen=True, eq=False)
class MouseFolder:
    """A validated mouse folder: its metadata in memory, trials left on disk."""

    path: Path
    name: str
    kind: str  # "video" (2023) or "static" (2022); `dataset_kind` is the object to ask
    trial_ids: np.ndarray  # int64 [trials], file stems, sorted
    tiers: np.ndarray  # str [trials]
    stimulus_ids: np.ndarray  # int64 [trials], equal ids = same stimulus
    lengths: np.ndarray  # int64 [trials], valid frames (1 for static)
    unit_ids: np.ndarray  # int64 [N]
    coordinates: np.ndarray  # float32 [N, 3]
    statistics: stats_lib.Statistics  # per-neuron/scalar (pooled from per-frame ones where given so)
    frame_shape: tuple[int, int]  # (H, W)
    behavior_dim: int
    n_neurons: int
    padded_length: int
    statistics_layout: str = stats_lib.PER_NEURON  # the layout of meta/statistics as given
    source_statistics: stats_lib.Statistics | None = None  # as given (None: same as `statistics`)
    stimulus_types: np.ndarray | None = None  # str [trials]; "unknown" where the folder does not say

    def __post_init__(self) -> None:
        if self.stimulus_types is None:
            object.__setattr__(self, "stimulus_types", np.full(self.n_trials, UNKNOWN_STIMULUS_TYPE))
        if self.source_statistics is None:
            object.__setattr__(self, "source_statistics", self.statistics)

    @property
    def dataset_kind(self) -> DatasetKind:
        return kind_named(self.kind)

    @property
    def n_trials(self) -> int:
        return int(self.trial_ids.shape[0])

    @property
    def stimulus_key(self) -> str:
        return self.dataset_kind.stimulus_key

    def trial_path(self, key: str, i: int) -> Path:
        """The on-disk file of trial index `i` (position in `trial_ids`) for one array key."""
        return self.path / "data" / key / f"{int(self.trial_ids[i])}.npy"


# ----------------------------------------------------------------------------- folder layout


def _detect_kind(path: Path) -> DatasetKind:
    has_videos = (path / "data" / VIDEO.stimulus_key).is_dir()
    has_images = (path / "data" / STATIC.stimulus_key).is_dir()
    if has_videos == has_images:
        found = "both" if has_videos else "neither"
        raise InputDataError(
            path / "data", "stimulus folder", "exactly one of videos/ (2023) or images/ (2022)", found
        )
    return VIDEO if has_videos else STATIC


def _trial_stems(folder: Path) -> set[int]:
    """Trial ids named by `<id>.npy` files; hidden files and other extensions are ignored."""
    if not folder.is_dir():
        raise InputDataError(folder, "folder", "an existing folder of per-trial .npy files", "no such folder")
    ids = set()
    for file in folder.iterdir():
        if file.name.startswith(".") or file.suffix != ".npy":
            continue
        stem = file.stem
        if not (stem.isascii() and stem.isdigit() and str(int(stem)) == stem):
            raise InputDataError(file, "file name", "a trial number like 12.npy", repr(file.name))
        ids.add(int(stem))
    return ids


def _trial_ids(path: Path, keys: tuple[str, ...]) -> np.ndarray:
    """Sorted trial ids; every trial must have all four of its arrays."""
    stems = {key: _trial_stems(path / "data" / key) for key in keys}
    every = set().union(*stems.values())
    if not every:
        raise InputDataError(path / "data" / keys[1], "trials", "at least one <id>.npy trial file", "none")
    for trial in sorted(every):
        for key in keys:
            if trial not in stems[key]:
                raise InputDataError(
                    path / "data" / key / f"{trial}.npy",
                    "trial file",
                    f"one file per trial in each of {', '.join(keys)}",
                    "missing",
                )
    return np.asarray(sorted(every), np.int64)


# ----------------------------------------------------------------------------- metadata


def _read_neurons(path: Path) -> tuple[np.ndarray, np.ndarray]:
    neurons = path / "meta" / "neurons"
    unit_path = neurons / "unit_ids.npy"
    unit_ids = load_npy(unit_path, "unit_ids")
    require_kind(unit_ids, unit_path, "unit_ids", INTEGER_KINDS, "integer")
    require_ndim(unit_ids, unit_path, "unit_ids", 1, "N")
    if unit_ids.shape[0] == 0:
        raise InputDataError(unit_path, "unit_ids", "at least one neuron", "0")
    duplicate = first_duplicate(np.asarray(unit_ids).tolist())
    if duplicate is not None:
        raise InputDataError(unit_path, "unit_ids", "distinct unit ids", f"{duplicate} twice")
    n = int(unit_ids.shape[0])
    coordinate_path = neurons / "cell_motor_coordinates.npy"
    coordinates = load_numeric(coordinate_path, "cell_motor_coordinates")
    require_ndim(coordinates, coordinate_path, "cell_motor_coordinates", 2, "N x 3")
    require_dim(coordinates, coordinate_path, "cell_motor_coordinates", 0, n, "as meta/neurons/unit_ids.npy")
    require_dim(coordinates, coordinate_path, "cell_motor_coordinates", 1, 3, "x, y, z")
    return np.array(unit_ids, np.int64), np.array(coordinates, np.float32)


def _read_tiers(path: Path, kind: DatasetKind, n_trials: int) -> np.ndarray:
    tier_path = path / "meta" / "trials" / "tiers.npy"
    tiers = load_npy(tier_path, "tiers")
    require_kind(tiers, tier_path, "tiers", STRING_KINDS, "string")
    require_length(tiers, tier_path, "tiers", n_trials, "one per trial file")
    tiers = np.asarray([t.decode() if isinstance(t, bytes) else str(t) for t in tiers.tolist()])
    for i, tier in enumerate(tiers.tolist()):
        if tier not in kind.tiers:
            raise InputDataError(
                tier_path, "tiers", f"one of {', '.join(kind.tiers)} ({kind.name} folder)", f"{tier!r} at trial {i}"
            )
    for tier in kind.required_tiers:
        if not np.any(tiers == tier):
            counts = ", ".join(f"{t} {c}" for t, c in sorted(Counter(tiers.tolist()).items()))
            raise InputDataError(tier_path, "tiers", f"at least one {tier!r} trial", counts)
    return tiers


def _check_trial_idx(path: Path, n_trials: int) -> None:
    """meta/trials/trial_idx.npy is optional; when present its ids must be distinct."""
    idx_path = path / "meta" / "trials" / "trial_idx.npy"
    if not idx_path.exists():
        return
    trial_idx = load_npy(idx_path, "trial_idx")
    require_kind(trial_idx, idx_path, "trial_idx", INTEGER_KINDS, "integer")
    require_length(trial_idx, idx_path, "trial_idx", n_trials, "one per trial file")
    duplicate = first_duplicate(np.asarray(trial_idx).tolist())
    if duplicate is not None:
        raise InputDataError(idx_path, "trial_idx", "distinct trial ids", f"{duplicate} twice")


def _dense_ids(values: list) -> np.ndarray:
    """Maps arbitrary labels to 0, 1, 2, ... in order of first appearance."""
    codes = {value: i for i, value in enumerate(dict.fromkeys(values))}
    return np.asarray([codes[value] for value in values], np.int64)


def _read_stimulus_labels(path: Path, kind: DatasetKind, n_trials: int) -> list | None:
    """Per-trial stimulus labels from condition_hash/frame_image_id, or None when absent."""
    label_path = path / "meta" / "trials" / kind.stimulus_id_file
    if not label_path.exists():
        return None
    field = label_path.stem
    labels = load_npy(label_path, field)
    require_kind(labels, label_path, field, NUMERIC_KINDS + STRING_KINDS, "numeric or string")
    require_length(labels, label_path, field, n_trials, "one per trial file")
    return np.asarray(labels).tolist()


def _read_stimulus_types(path: Path, n_trials: int) -> np.ndarray:
    """Per-trial stimulus types from meta/trials/stimulus_type.npy; "unknown" when absent."""
    type_path = path / "meta" / "trials" / STIMULUS_TYPE_FILE
    if not type_path.exists():
        return np.full(n_trials, UNKNOWN_STIMULUS_TYPE)
    types = load_npy(type_path, "stimulus_type")
    require_kind(types, type_path, "stimulus_type", STRING_KINDS, "string")
    require_length(types, type_path, "stimulus_type", n_trials, "one per trial file")
    return np.asarray([t.decode() if isinstance(t, bytes) else str(t) for t in types.tolist()])


def _read_statistics(
    path: Path, kind: DatasetKind, n_neurons: int, frame_shape: tuple[int, int]
) -> tuple[stats_lib.Statistics, str, stats_lib.Statistics]:
    """(per-neuron statistics, layout, statistics as given) from meta/statistics.

    Each file must have the per-neuron or the per-frame shape (see `statistics`); the layout
    most files share is the folder's, and a file in the other layout is named as the error.
    """
    leads = stats_lib.leading_shapes(kind, n_neurons, frame_shape)
    given: stats_lib.Statistics = {}
    found = []  # (layout, frames), file, field, key, shape
    for key in kind.array_keys:
        given[key] = {}
        for group in stats_lib.STATISTIC_GROUPS:
            given[key][group] = {}
            for name in stats_lib.STATISTIC_NAMES:
                stat_path = path / "meta" / "statistics" / key / group / f"{name}.npy"
                field = f"statistics {key}/{group}/{name}"
                value = load_numeric(stat_path, field)
                shape = tuple(value.shape)
                layout = stats_lib.layout_of(key, kind, leads[key], shape)
                if layout is None:
                    expected = stats_lib.describe_shapes(key, kind, leads[key])
                    raise InputDataError(stat_path, field, expected, f"shape {shape}")
                given[key][group][name] = np.array(value, np.float32)
                found.append((layout, stat_path, field, key, shape))
    layout, frames = Counter(entry[0] for entry in found).most_common(1)[0][0]
    for other, stat_path, field, key, shape in found:
        if other != (layout, frames):
            lead = leads[key]
            if layout == stats_lib.PER_FRAME:
                want = "[" + ", ".join(map(str, (*lead, frames))) + "]"
            elif key == kind.stimulus_key:
                want = "a scalar or size-1 array"
            else:
                want = str(list(lead))
            raise InputDataError(stat_path, field, f"shape {want} ({layout} layout, as the folder's other "
                                 "statistics)", f"shape {shape}")
    if layout == stats_lib.PER_FRAME:
        return stats_lib.pool_frames(given, kind), layout, given
    for group in given[kind.stimulus_key].values():
        for name, value in group.items():
            group[name] = value.reshape(())
    return given, layout, given


# ----------------------------------------------------------------------------- public API


def read_mouse_folder(path: str | Path) -> MouseFolder:
    """Validates a whole official mouse folder; raises `InputDataError` on the first problem."""
    path = Path(path)
    if not path.is_dir():
        raise InputDataError(path, "mouse folder", "an existing folder", "no such folder")
    kind = _detect_kind(path)
    trial_ids = _trial_ids(path, kind.array_keys)
    n_trials = len(trial_ids)
    unit_ids, coordinates = _read_neurons(path)
    n_neurons = int(unit_ids.shape[0])
    tiers = _read_tiers(path, kind, n_trials)
    _check_trial_idx(path, n_trials)
    labels = _read_stimulus_labels(path, kind, n_trials)
    stimulus_types = _read_stimulus_types(path, n_trials)

    summaries = []
    for trial in trial_ids:
        first = (summaries[0].frame_shape, int(trial_ids[0])) if summaries else None
        summaries.append(check_trial(kind, path, int(trial), n_neurons, labels is None, first))
    if labels is None:
        labels = [s.digest for s in summaries]
    frame_shape = summaries[0].frame_shape
    # after the trials: a per-frame statistic's shape is checked against the frame shape
    statistics, layout, given = _read_statistics(path, kind, n_neurons, frame_shape)

    return MouseFolder(
        path=path,
        name=path.resolve().name,
        kind=kind.name,
        trial_ids=trial_ids,
        tiers=tiers,
        stimulus_ids=_dense_ids(labels),
        lengths=np.asarray([s.length for s in summaries], np.int64),
        unit_ids=unit_ids,
        coordinates=coordinates,
        statistics=statistics,
        frame_shape=frame_shape,
        behavior_dim=kind.behavior_dim,
        n_neurons=n_neurons,
        padded_length=max(s.padded for s in summaries),
        statistics_layout=layout,
        source_statistics=given,
        stimulus_types=stimulus_types,
    )


def read_trial(folder: MouseFolder, i: int) -> dict[str, np.ndarray]:
    """Trial index `i` as time-major float32 arrays trimmed to its length (static: T = 1)."""
    length = int(folder.lengths[i])
    kind = folder.dataset_kind
    raw = {key: load_numeric(folder.trial_path(key, i), key) for key in kind.array_keys}
    H, W = folder.frame_shape
    rest = {"responses": (folder.n_neurons,), "behavior": (folder.behavior_dim,), "pupil_center": (2,)}
    out = {}
    if kind.is_video:
        for key, lead in {"videos": (H, W), **rest}.items():
            array, file = raw[key], folder.trial_path(key, i)
            if array.shape[:-1] != lead or array.shape[-1] < length:
                raise InputDataError(file, key, f"shape {lead} x >={length} as validated", tuple(array.shape))
            # np.array copies: the result must not keep the memory map alive.
            out[key] = np.array(np.moveaxis(array[..., :length], -1, 0), np.float32, order="C")
        return out
    for key, shape in {kind.stimulus_key: (1, H, W), **rest}.items():
        array, file = raw[key], folder.trial_path(key, i)
        if array.shape != shape:
            raise InputDataError(file, key, f"shape {shape} as validated", tuple(array.shape))
        values = np.array(array, np.float32, order="C")
        out["videos" if key == kind.stimulus_key else key] = values if key == kind.stimulus_key else values[None]
    return out


def summary_line(folder: MouseFolder) -> str:
    """One line for humans: name, kind, trials per tier, neurons, frame shape."""
    kind = folder.dataset_kind
    counts = Counter(folder.tiers.tolist())
    tiers = ", ".join(f"{tier} {counts[tier]}" for tier in kind.tiers if counts[tier])
    H, W = folder.frame_shape
    frames = f", padded to {folder.padded_length}" if kind.is_video else ""
    return (
        f"{folder.name}: {kind.name}, {folder.n_trials} trials ({tiers}), "
        f"{folder.n_neurons} neurons, frames {H}x{W}{frames}"
    )


def main(argv: Sequence[str]) -> None:
    """Validates the folders named after the program name and prints one line for each."""
    for path in cli.positional(argv, "mouse folders"):
        print(summary_line(read_mouse_folder(path)))


if __name__ == "__main__":
    cli.run(main)
