"""Per-trial checks of official mouse folders: shapes, NaN padding, frame shapes, content hash.

One trial's arrays are memory-mapped, checked and summarized (length, padding, frame shape,
optional stimulus digest); `raw.read_mouse_folder` runs them over every trial.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from sensorium_jax.data.kinds import STATIC, VIDEO, DatasetKind
from sensorium_jax.data.validation import frame_nan_layout, load_numeric, require_dim, require_ndim
from sensorium_jax.errors import InputDataError


@dataclasses.dataclass(frozen=True)
class TrialSummary:
    """What the folder reader keeps of one checked trial."""

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


def check_video_trial(
    folder: Path, trial: int, n_neurons: int, want_digest: bool, first: tuple | None
) -> TrialSummary:
    keys = VIDEO.array_keys
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
    return TrialSummary(length, padded, frame_shape, digest)


def check_static_trial(
    folder: Path, trial: int, n_neurons: int, want_digest: bool, first: tuple | None
) -> TrialSummary:
    keys = STATIC.array_keys
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
    return TrialSummary(1, 1, frame_shape, digest)


def check_trial(
    kind: DatasetKind, folder: Path, trial: int, n_neurons: int, want_digest: bool, first: tuple | None
) -> TrialSummary:
    """Checks one trial of a folder of this kind (video: H x W x T; static: one image)."""
    check = check_video_trial if kind.is_video else check_static_trial
    return check(folder, trial, n_neurons, want_digest, first)
