"""Reads and validates official SENSORIUM mouse folders (2023 video, 2022 static images).

`read_mouse_folder` checks every file before anything downstream trusts the folder, so a
bad download fails with one line naming the file, the field and what was expected.
Arrays are memory-mapped: memory stays bounded by one trial whatever the folder size.

CLI: `python -m sensorium_jax.data.raw FOLDER...` validates folders and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from sensorium_jax.data.validation import (
    INTEGER_KINDS,
    NUMERIC_KINDS,
    STRING_KINDS,
    first_duplicate,
    frame_nan_layout,
    load_npy,
    load_numeric,
    require_dim,
    require_kind,
    require_length,
    require_ndim,
)
from sensorium_jax.errors import InputDataError, run_cli

VIDEO_TIERS = (
    "train",
    "oracle",
    "live_test_main",
    "live_test_bonus",
    "final_test_main",
    "final_test_bonus",
    "none",
)
STATIC_TIERS = ("train", "validation", "test", "final_test")
# Tiers without which a folder cannot be trained and validated on.
REQUIRED_TIERS = {"video": ("train", "oracle"), "static": ("train", "validation")}
STIMULUS_KEY = {"video": "videos", "static": "images"}
STIMULUS_ID_FILE = {"video": "condition_hash.npy", "static": "frame_image_id.npy"}
BEHAVIOR_DIM = {"video": 2, "static": 3}
STATISTIC_GROUPS = ("all", "stimulus_frame")
STATISTIC_NAMES = ("mean", "std", "min", "max", "median")


@dataclasses.dataclass(frozen=True, eq=False)
class MouseFolder:
    """A validated mouse folder: its metadata in memory, trials left on disk."""

    path: Path
    name: str
    kind: str  # "video" (2023) or "static" (2022)
    trial_ids: np.ndarray  # int64 [trials], file stems, sorted
    tiers: np.ndarray  # str [trials]
    stimulus_ids: np.ndarray  # int64 [trials], equal ids = same stimulus
    lengths: np.ndarray  # int64 [trials], valid frames (1 for static)
    unit_ids: np.ndarray  # int64 [N]
    coordinates: np.ndarray  # float32 [N, 3]
    statistics: dict[str, dict[str, dict[str, np.ndarray]]]
    frame_shape: tuple[int, int]  # (H, W)
    behavior_dim: int
    n_neurons: int
    padded_length: int

    @property
    def n_trials(self) -> int:
        return int(self.trial_ids.shape[0])

    @property
    def stimulus_key(self) -> str:
        return STIMULUS_KEY[self.kind]

    def trial_path(self, key: str, i: int) -> Path:
        """The on-disk file of trial index `i` (position in `trial_ids`) for one array key."""
        return self.path / "data" / key / f"{int(self.trial_ids[i])}.npy"


# ----------------------------------------------------------------------------- folder layout


def _detect_kind(path: Path) -> str:
    has_videos = (path / "data" / "videos").is_dir()
    has_images = (path / "data" / "images").is_dir()
    if has_videos == has_images:
        found = "both" if has_videos else "neither"
        raise InputDataError(
            path / "data", "stimulus folder", "exactly one of videos/ (2023) or images/ (2022)", found
        )
    return "video" if has_videos else "static"


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


def _read_tiers(path: Path, kind: str, n_trials: int) -> np.ndarray:
    tier_path = path / "meta" / "trials" / "tiers.npy"
    tiers = load_npy(tier_path, "tiers")
    require_kind(tiers, tier_path, "tiers", STRING_KINDS, "string")
    require_length(tiers, tier_path, "tiers", n_trials, "one per trial file")
    tiers = np.asarray([t.decode() if isinstance(t, bytes) else str(t) for t in tiers.tolist()])
    allowed = VIDEO_TIERS if kind == "video" else STATIC_TIERS
    for i, tier in enumerate(tiers.tolist()):
        if tier not in allowed:
            raise InputDataError(
                tier_path, "tiers", f"one of {', '.join(allowed)} ({kind} folder)", f"{tier!r} at trial {i}"
            )
    for tier in REQUIRED_TIERS[kind]:
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


def _read_stimulus_labels(path: Path, kind: str, n_trials: int) -> list | None:
    """Per-trial stimulus labels from condition_hash/frame_image_id, or None when absent."""
    label_path = path / "meta" / "trials" / STIMULUS_ID_FILE[kind]
    if not label_path.exists():
        return None
    field = label_path.stem
    labels = load_npy(label_path, field)
    require_kind(labels, label_path, field, NUMERIC_KINDS + STRING_KINDS, "numeric or string")
    require_length(labels, label_path, field, n_trials, "one per trial file")
    return np.asarray(labels).tolist()


def _statistic_shape_ok(key: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    if key in ("videos", "images"):
        return int(np.prod(shape)) == 1
    return shape == expected


def _read_statistics(path: Path, kind: str, n_neurons: int) -> dict:
    """statistics[key][group][stat]; the stimulus statistics become scalars."""
    expected = {
        STIMULUS_KEY[kind]: ((), "a scalar or size-1 array"),
        "responses": ((n_neurons,), f"[{n_neurons}] (one per neuron)"),
        "behavior": ((BEHAVIOR_DIM[kind],), f"[{BEHAVIOR_DIM[kind]}] (one per behavior variable)"),
        "pupil_center": ((2,), "[2] (x, y)"),
    }
    statistics: dict = {}
    for key, (shape, description) in expected.items():
        statistics[key] = {}
        for group in STATISTIC_GROUPS:
            statistics[key][group] = {}
            for name in STATISTIC_NAMES:
                stat_path = path / "meta" / "statistics" / key / group / f"{name}.npy"
                field = f"statistics {key}/{group}/{name}"
                value = load_numeric(stat_path, field)
                if not _statistic_shape_ok(key, tuple(value.shape), shape):
                    raise InputDataError(stat_path, field, f"shape {description}", f"shape {tuple(value.shape)}")
                value = np.array(value, np.float32).reshape(shape)
                statistics[key][group][name] = value
    return statistics


# ----------------------------------------------------------------------------- trials


@dataclasses.dataclass(frozen=True)
class _TrialSummary:
    length: int
    padded: int
    frame_shape: tuple[int, int]
    digest: str | None


def _digest(stimulus: np.ndarray) -> str:
    """Content hash of a trial's valid stimulus: equal hashes = the same stimulus."""
    values = np.ascontiguousarray(stimulus, np.float32)
    hasher = hashlib.sha1(repr(values.shape).encode())
    hasher.update(values.tobytes())
    return hasher.hexdigest()


def _load_trial_arrays(folder: Path, keys: tuple[str, ...], trial: int) -> dict[str, tuple[Path, np.ndarray]]:
    arrays = {}
    for key in keys:
        file = folder / "data" / key / f"{trial}.npy"
        arrays[key] = (file, load_numeric(file, key))
    return arrays


def _require_finite(array: np.ndarray, file: Path, key: str) -> None:
    if np.isinf(np.asarray(array)).any():
        raise InputDataError(file, key, "finite values or NaN padding", "inf")


def _video_length(responses: np.ndarray, file: Path) -> int:
    """Valid frames of a video trial: the index of the first NaN in the responses."""
    any_nan, all_nan = frame_nan_layout(responses)
    if all_nan.all():
        raise InputDataError(file, "responses", "at least one frame without NaN", "an all-NaN trial")
    length = int(np.argmax(any_nan)) if any_nan.any() else int(any_nan.shape[0])
    if not all_nan[length:].all():
        if not all_nan[length]:
            found = f"NaN in part of frame {length}"
        else:
            found = f"NaN at frame {length} but values at frame {length + int(np.argmin(all_nan[length:]))}"
        raise InputDataError(file, "NaN padding", "NaN only at the end of the trial (whole frames)", found)
    return length


def _require_frame_shape(file: Path, key: str, shape: tuple[int, int], first: tuple) -> None:
    """All trials of a mouse share one frame shape; `first` = (shape, trial id) of trial one."""
    if first is not None and shape != first[0]:
        raise InputDataError(file, key, f"frames of {first[0]} as trial {first[1]}", shape)


def _check_video_trial(
    folder: Path, trial: int, n_neurons: int, want_digest: bool, first: tuple | None
) -> _TrialSummary:
    keys = ("videos", "responses", "behavior", "pupil_center")
    arrays = _load_trial_arrays(folder, keys, trial)
    layouts = {"videos": "H x W x T", "responses": "N x T", "behavior": "2 x T", "pupil_center": "2 x T"}
    for key, (file, array) in arrays.items():
        require_ndim(array, file, key, 3 if key == "videos" else 2, layouts[key])
    response_file, responses = arrays["responses"]
    require_dim(responses, response_file, "responses", 0, n_neurons, "N as meta/neurons/unit_ids.npy")
    for key in ("behavior", "pupil_center"):
        require_dim(arrays[key][1], arrays[key][0], key, 0, 2, layouts[key])
    padded = int(responses.shape[-1])
    if padded == 0:
        raise InputDataError(response_file, "responses", "at least one frame", "shape " + str(responses.shape))
    for key, (file, array) in arrays.items():
        require_dim(array, file, key, array.ndim - 1, padded, f"T as {response_file.name} in responses")
    video_file, videos = arrays["videos"]
    frame_shape = (int(videos.shape[0]), int(videos.shape[1]))
    _require_frame_shape(video_file, "videos", frame_shape, first)
    length = _video_length(responses, response_file)
    for key, (file, array) in arrays.items():
        any_nan, all_nan = frame_nan_layout(array)
        if any_nan[:length].any():
            found = f"NaN at frame {int(np.argmax(any_nan))}"
        elif not all_nan[length:].all():
            found = f"values at frame {length + int(np.argmin(all_nan[length:]))}"
        else:
            found = None
        if found is not None:
            raise InputDataError(
                file, "NaN padding", f"values before frame {length} and NaN from it on, as responses", found
            )
        _require_finite(array[..., :length], file, key)
    digest = _digest(videos[..., :length]) if want_digest else None
    return _TrialSummary(length, padded, frame_shape, digest)


def _check_static_trial(
    folder: Path, trial: int, n_neurons: int, want_digest: bool, first: tuple | None
) -> _TrialSummary:
    keys = ("images", "responses", "behavior", "pupil_center")
    arrays = _load_trial_arrays(folder, keys, trial)
    layouts = {"images": (3, "1 x H x W"), "responses": (1, "N"), "behavior": (1, "3"), "pupil_center": (1, "2")}
    for key, (file, array) in arrays.items():
        require_ndim(array, file, key, *layouts[key])
    sizes = {"images": (1, "one channel"), "responses": (n_neurons, "N as meta/neurons/unit_ids.npy")}
    sizes |= {"behavior": (3, "pupil, its derivative, running"), "pupil_center": (2, "x, y")}
    for key, (size, why) in sizes.items():
        require_dim(arrays[key][1], arrays[key][0], key, 0, size, why)
    image_file, images = arrays["images"]
    frame_shape = (int(images.shape[1]), int(images.shape[2]))
    _require_frame_shape(image_file, "images", frame_shape, first)
    response_file, responses = arrays["responses"]
    if np.isnan(np.asarray(responses)).all():
        raise InputDataError(response_file, "responses", "at least one value that is not NaN", "an all-NaN trial")
    for key, (file, array) in arrays.items():
        if np.isnan(np.asarray(array)).any():
            raise InputDataError(file, key, "no NaN in a static trial", "NaN")
        _require_finite(array, file, key)
    digest = _digest(images) if want_digest else None
    return _TrialSummary(1, 1, frame_shape, digest)


# ----------------------------------------------------------------------------- public API


def read_mouse_folder(path: str | Path) -> MouseFolder:
    """Validates a whole official mouse folder; raises `InputDataError` on the first problem."""
    path = Path(path)
    if not path.is_dir():
        raise InputDataError(path, "mouse folder", "an existing folder", "no such folder")
    kind = _detect_kind(path)
    keys = (STIMULUS_KEY[kind], "responses", "behavior", "pupil_center")
    trial_ids = _trial_ids(path, keys)
    n_trials = len(trial_ids)
    unit_ids, coordinates = _read_neurons(path)
    n_neurons = int(unit_ids.shape[0])
    tiers = _read_tiers(path, kind, n_trials)
    _check_trial_idx(path, n_trials)
    labels = _read_stimulus_labels(path, kind, n_trials)
    statistics = _read_statistics(path, kind, n_neurons)

    check = _check_video_trial if kind == "video" else _check_static_trial
    summaries = []
    for trial in trial_ids:
        first = (summaries[0].frame_shape, int(trial_ids[0])) if summaries else None
        summaries.append(check(path, int(trial), n_neurons, labels is None, first))
    if labels is None:
        labels = [s.digest for s in summaries]

    return MouseFolder(
        path=path,
        name=path.resolve().name,
        kind=kind,
        trial_ids=trial_ids,
        tiers=tiers,
        stimulus_ids=_dense_ids(labels),
        lengths=np.asarray([s.length for s in summaries], np.int64),
        unit_ids=unit_ids,
        coordinates=coordinates,
        statistics=statistics,
        frame_shape=summaries[0].frame_shape,
        behavior_dim=BEHAVIOR_DIM[kind],
        n_neurons=n_neurons,
        padded_length=max(s.padded for s in summaries),
    )


def read_trial(folder: MouseFolder, i: int) -> dict[str, np.ndarray]:
    """Trial index `i` as time-major float32 arrays trimmed to its length (static: T = 1)."""
    length = int(folder.lengths[i])
    keys = (folder.stimulus_key, "responses", "behavior", "pupil_center")
    raw = {key: load_numeric(folder.trial_path(key, i), key) for key in keys}
    H, W = folder.frame_shape
    if folder.kind == "video":
        expected = {
            "videos": (H, W),
            "responses": (folder.n_neurons,),
            "behavior": (folder.behavior_dim,),
            "pupil_center": (2,),
        }
        out = {}
        for key, lead in expected.items():
            array, file = raw[key], folder.trial_path(key, i)
            if array.shape[:-1] != lead or array.shape[-1] < length:
                raise InputDataError(file, key, f"shape {lead} x >={length} as validated", tuple(array.shape))
            # np.array copies: the result must not keep the memory map alive.
            out[key] = np.array(np.moveaxis(array[..., :length], -1, 0), np.float32, order="C")
        return out
    expected = {
        "images": (1, H, W),
        "responses": (folder.n_neurons,),
        "behavior": (folder.behavior_dim,),
        "pupil_center": (2,),
    }
    out = {}
    for key, shape in expected.items():
        array, file = raw[key], folder.trial_path(key, i)
        if array.shape != shape:
            raise InputDataError(file, key, f"shape {shape} as validated", tuple(array.shape))
        values = np.array(array, np.float32, order="C")
        out["videos" if key == "images" else key] = values if key == "images" else values[None]
    return out


def summary_line(folder: MouseFolder) -> str:
    """One line for humans: name, kind, trials per tier, neurons, frame shape."""
    counts = Counter(folder.tiers.tolist())
    order = VIDEO_TIERS if folder.kind == "video" else STATIC_TIERS
    tiers = ", ".join(f"{tier} {counts[tier]}" for tier in order if counts[tier])
    H, W = folder.frame_shape
    frames = f", padded to {folder.padded_length}" if folder.kind == "video" else ""
    return (
        f"{folder.name}: {folder.kind}, {folder.n_trials} trials ({tiers}), "
        f"{folder.n_neurons} neurons, frames {H}x{W}{frames}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sensorium_jax.data.raw",
        description="Validate official SENSORIUM mouse folders and print a one-line summary each.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="mouse folder(s)")
    args = parser.parse_args(argv)
    for path in args.folders:
        print(summary_line(read_mouse_folder(path)))


if __name__ == "__main__":
    run_cli(main)
