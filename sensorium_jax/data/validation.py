"""Small checks on .npy files that turn every bad input into one `InputDataError` line.

Kept apart from the format logic in `raw.py` so that each check names the offending file,
the field and what was expected in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sensorium_jax.errors import InputDataError

NUMERIC_KINDS = "iuf"
INTEGER_KINDS = "iu"
STRING_KINDS = "US"
NPY_MAGIC = b"\x93NUMPY"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "no details"
    return f"{type(error).__name__}: {text[:200]}"


def load_npy(path: Path, field: str) -> np.ndarray:
    """Memory-maps one .npy file, so reading a header or a slice never loads the whole file."""
    if not path.is_file():
        raise InputDataError(path, field, "an existing .npy file", "no such file")
    with path.open("rb") as handle:
        magic = handle.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:  # np.load would call a text file "pickled data"
        raise InputDataError(path, field, "a readable .npy file",
                             f"not a NumPy .npy file (bad magic: starts with {magic[:6]!r}, not {NPY_MAGIC!r})")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:  # any failure to parse user data is the user's problem
        raise InputDataError(path, field, "a readable .npy file", _one_line(error)) from None
    if not isinstance(array, np.ndarray):
        raise InputDataError(path, field, "a single .npy array", type(array).__name__)
    return array


def require_kind(array: np.ndarray, path: Path, field: str, kinds: str, what: str) -> None:
    """Rejects arrays whose dtype kind (e.g. strings where numbers belong) is not in `kinds`."""
    if array.dtype.kind not in kinds:
        raise InputDataError(path, field, f"a {what} array", f"dtype {array.dtype}")


def load_numeric(path: Path, field: str) -> np.ndarray:
    """Loads an int or float array; strings, booleans, complex and objects are refused."""
    array = load_npy(path, field)
    require_kind(array, path, field, NUMERIC_KINDS, "numeric (int or float)")
    return array


def require_ndim(array: np.ndarray, path: Path, field: str, ndim: int, layout: str) -> None:
    if array.ndim != ndim:
        raise InputDataError(
            path, field, f"{ndim} dimension(s) ({layout})", f"shape {tuple(array.shape)}"
        )


def require_dim(array: np.ndarray, path: Path, field: str, axis: int, size: int, why: str) -> None:
    """Checks one axis against a size known from elsewhere (`why` says where it came from)."""
    if array.shape[axis] != size:
        raise InputDataError(
            path, field, f"{size} along axis {axis} ({why})", f"shape {tuple(array.shape)}"
        )


def require_length(array: np.ndarray, path: Path, field: str, n: int, why: str) -> None:
    """A 1-D per-trial or per-neuron array must have exactly one entry per item."""
    require_ndim(array, path, field, 1, why)
    if array.shape[0] != n:
        raise InputDataError(path, field, f"{n} entries ({why})", f"{array.shape[0]}")


def first_duplicate(values: Sequence) -> object | None:
    """The first value seen twice, or None: names the culprit in duplicate-id errors."""
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def frame_nan_layout(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (last axis): whether any value is NaN and whether all values are NaN."""
    frames = np.isnan(np.asarray(array)).reshape(-1, array.shape[-1])
    return frames.any(0), frames.all(0)
