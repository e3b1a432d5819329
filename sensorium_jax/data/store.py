"""The converted data set: one zarr v3 group per mouse, written and read with tensorstore.

Layout (a public format; zarr-python reads it too):

    STORE/zarr.json                 root group
    STORE/store.json                {"format_version", "mice": [names in id order]}
    STORE/<mouse>/zarr.json         group
    STORE/<mouse>/meta.json         lengths, tiers, trial/stimulus/unit ids, coordinates,
                                    statistics, kind, frame shape, source fingerprint
    STORE/<mouse>/videos            [trials, T, H, W]  uint8 when exact, else float32
    STORE/<mouse>/responses         [trials, T, N]     float32, the source values exactly
    STORE/<mouse>/behavior          [trials, T, k]     float32
    STORE/<mouse>/pupil_center      [trials, T, 2]     float32

T is the longest trial of the mouse (1 for static 2022 data); frames past a trial's length
hold the fill value 0. `store.json` only ever lists complete mice (see `convert`).

Chunks and codecs were chosen by measurement (`python benchmarks/bench_data.py --chunking`;
2 shared CPU cores, page cache warm; 512 random 80-frame clips of [24 trials, 300, N]
float32 responses, 64 reads issued then awaited; best clips/s of 3 passes, least CPU per clip):

    responses chunk [1, Tc, N]   raw bytes                 zstd-1                  blosc-lz4 + shuffle
    synthetic mouse (N = 8113)   (compression x1.00)       (x1.03)                 (x1.01)
    Tc = 10                      417 clips/s, 1.41 ms CPU  160, 4.26 ms            270, 1.86 ms
    Tc = 20                      421, 1.14                 151, 4.48               510, 1.44
    Tc = 40                      801, 1.09 (x0.94: pads)   186, 4.08               508, 1.61
    Tc = 100                     846, 1.24                 202, 4.92               370, 1.88
    Tc = 300 (whole trial)       582, 1.18                 119, 5.78               255, 2.50
    calcium-like random traces   Tc = 20: 737 clips/s      241 (x1.13)             326 (x1.14)
    sharded (shard = trial, inner [1, 10 | 20, N], raw): 640 | 605 clips/s (vs 764 | 737 unsharded)

Float32 activity hardly compresses (1-21%) while decoding costs 1.3-5x the CPU, so responses
(and everything else) are stored as raw little-endian bytes. Wall-clock rates swing 2x with
the load of the shared machine; CPU per clip is steadier: Tc = 20 and 40 cost the least.
Tc = 20 divides the usual trial lengths (300, 320) and bounds the excess read of an unaligned
80-frame clip to 20 frames when the page cache is cold. Behavior and pupil center are tiny:
whole trials, several per chunk (the pipeline keeps them in memory anyway).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from sensorium_jax.data import normalization
from sensorium_jax.data.card import DatasetCard, MouseCard
from sensorium_jax.errors import InputDataError

FORMAT_VERSION = 1
ARRAY_KEYS = ("videos", "responses", "behavior", "pupil_center")
SMALL_KEYS = ("behavior", "pupil_center")
CHUNK_FRAMES = 20  # see the measurements above
SMALL_CHUNK_BYTES = 16384  # behavior / pupil center: trials per chunk up to this size
STATISTIC_KEYS = {"video": ("videos", "responses", "behavior", "pupil_center"),
                  "static": ("images", "responses", "behavior", "pupil_center")}
_RAW_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}]


# ----------------------------------------------------------------------------- metadata


@dataclasses.dataclass(frozen=True, eq=False)
class MouseMeta:
    """Everything about one stored mouse except its arrays."""

    name: str
    kind: str  # "video" | "static"
    n_frames: int  # stored T (longest trial; 1 for static)
    frame_shape: tuple[int, int]
    behavior_dim: int
    n_neurons: int
    video_dtype: str  # "uint8" | "float32"
    lengths: np.ndarray  # int64 [trials]
    tiers: np.ndarray  # str [trials]
    trial_ids: np.ndarray  # int64 [trials], source file stems
    stimulus_ids: np.ndarray  # int64 [trials], equal = same stimulus
    unit_ids: np.ndarray  # int64 [N]
    coordinates: np.ndarray  # float32 [N, 3]
    statistics: dict  # [key][group][stat] -> float32 array
    source: str = ""
    fingerprint: str = ""
    synthetic: bool = False

    @property
    def n_trials(self) -> int:
        return int(self.lengths.shape[0])

    @functools.cached_property
    def stimulus_index(self) -> np.ndarray:
        """int32 [trials]: stimulus ids made dense (0..S-1) so they fit batches' int32."""
        return np.unique(self.stimulus_ids, return_inverse=True)[1].astype(np.int32)

    def trials_of(self, tiers: str | Sequence[str]) -> np.ndarray:
        """Indices of the trials in the given tier(s), in store order."""
        tiers = (tiers,) if isinstance(tiers, str) else tuple(tiers)
        return np.flatnonzero(np.isin(self.tiers, tiers))

    @functools.cached_property
    def normalization(self) -> normalization.Normalization:
        return normalization.from_statistics(self.statistics, self.kind)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        n, t = self.n_trials, self.n_frames
        return {
            "videos": (n, t, *self.frame_shape),
            "responses": (n, t, self.n_neurons),
            "behavior": (n, t, self.behavior_dim),
            "pupil_center": (n, t, 2),
        }

    def dtypes(self) -> dict[str, str]:
        return {"videos": self.video_dtype, "responses": "float32", "behavior": "float32",
                "pupil_center": "float32"}

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "kind": self.kind,
            "n_trials": self.n_trials,
            "n_frames": self.n_frames,
            "frame_shape": list(self.frame_shape),
            "behavior_dim": self.behavior_dim,
            "n_neurons": self.n_neurons,
            "video_dtype": self.video_dtype,
            "lengths": self.lengths.tolist(),
            "tiers": [str(t) for t in self.tiers],
            "trial_ids": self.trial_ids.tolist(),
            "stimulus_ids": self.stimulus_ids.tolist(),
            "unit_ids": self.unit_ids.tolist(),
            "coordinates": self.coordinates.tolist(),
            "statistics": {k: {g: {s: np.asarray(v).tolist() for s, v in group.items()}
                               for g, group in groups.items()}
                           for k, groups in self.statistics.items()},
            "source": self.source,
            "fingerprint": self.fingerprint,
            "synthetic": self.synthetic,
        }

    @classmethod
    def from_json(cls, raw: Any, path: Path) -> "MouseMeta":
        """Parses and checks a meta.json; every problem names the file and the field."""
        if not isinstance(raw, dict):
            raise InputDataError(path, "meta", "a JSON object", type(raw).__name__)

        def field(name: str, kind: type | tuple[type, ...]) -> Any:
            if name not in raw:
                raise InputDataError(path, name, "a field of meta.json", "missing")
            if not isinstance(raw[name], kind):
                raise InputDataError(path, name, f"a JSON {getattr(kind, '__name__', kind)}",
                                     type(raw[name]).__name__)
            return raw[name]

        def array(name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
            try:
                value = np.asarray(field(name, list), dtype)
            except (TypeError, ValueError) as error:
                raise InputDataError(path, name, f"a list of {np.dtype(dtype).name}", str(error)[:80]) from None
            if value.shape != shape:
                raise InputDataError(path, name, f"shape {shape}", f"shape {value.shape}")
            return value

        version = field("format_version", int)
        if version != FORMAT_VERSION:
            raise InputDataError(path, "format_version", str(FORMAT_VERSION), version)
        kind = field("kind", str)
        if kind not in STATISTIC_KEYS:
            raise InputDataError(path, "kind", "'video' or 'static'", repr(kind))
        n, n_frames, n_neurons = field("n_trials", int), field("n_frames", int), field("n_neurons", int)
        behavior_dim = field("behavior_dim", int)
        frame_shape = tuple(array("frame_shape", np.int64, (2,)).tolist())
        video_dtype = field("video_dtype", str)
        if video_dtype not in ("uint8", "float32"):
            raise InputDataError(path, "video_dtype", "'uint8' or 'float32'", repr(video_dtype))
        lengths = array("lengths", np.int64, (n,))
        if n and (lengths.min() < 1 or lengths.max() > n_frames):
            raise InputDataError(path, "lengths", f"values in 1..{n_frames}", f"{lengths.min()}..{lengths.max()}")
        tiers = field("tiers", list)
        if len(tiers) != n:
            raise InputDataError(path, "tiers", f"{n} entries (one per trial)", len(tiers))
        expected_stats = {"responses": (n_neurons,), "behavior": (behavior_dim,), "pupil_center": (2,)}
        raw_stats = field("statistics", dict)
        statistics: dict = {}
        for key in STATISTIC_KEYS[kind]:
            try:
                statistics[key] = {g: {s: np.asarray(v, np.float32) for s, v in stats.items()}
                                   for g, stats in raw_stats[key].items()}
                values = {stat: statistics[key]["all"][stat] for stat in ("mean", "std")}
            except (KeyError, TypeError, ValueError, AttributeError):
                raise InputDataError(path, f"statistics.{key}.all", "numeric mean and std",
                                     "missing or not numeric") from None
            shape = expected_stats.get(key)
            for stat, value in values.items():
                if (shape is None and value.size != 1) or (shape is not None and value.shape != shape):
                    raise InputDataError(path, f"statistics.{key}.all.{stat}",
                                         f"shape {shape or '() (a scalar)'}", f"shape {value.shape}")
        return cls(
            name=field("name", str),
            kind=kind,
            n_frames=n_frames,
            frame_shape=frame_shape,
            behavior_dim=behavior_dim,
            n_neurons=n_neurons,
            video_dtype=video_dtype,
            lengths=lengths,
            tiers=np.asarray([str(t) for t in tiers]),
            trial_ids=array("trial_ids", np.int64, (n,)),
            stimulus_ids=array("stimulus_ids", np.int64, (n,)),
            unit_ids=array("unit_ids", np.int64, (n_neurons,)),
            coordinates=array("coordinates", np.float32, (n_neurons, 3)),
            statistics=statistics,
            source=str(raw.get("source", "")),
            fingerprint=str(raw.get("fingerprint", "")),
            synthetic=bool(raw.get("synthetic", False)),
        )


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputDataError(path, what, "an existing file", "no such file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputDataError(path, what, "valid JSON", " ".join(str(error).split())[:120]) from None


# ----------------------------------------------------------------------------- reading


def tensorstore_context() -> ts.Context:
    """A per-process context without a chunk cache: memory is bounded by what is in flight."""
    return ts.Context({"cache_pool": {"total_bytes_limit": 0}})


def _array_spec(path: Path) -> dict:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}


class Store:
    """An opened store. Cheap to pickle: tensorstore handles are reopened on first use."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / "store.json"
        index = _read_json(index_path, "store index")
        if not isinstance(index, dict) or not isinstance(index.get("mice"), list) or not all(
            isinstance(m, str) for m in index["mice"]
        ):
            raise InputDataError(index_path, "mice", "a list of mouse names", repr(index)[:80])
        if index.get("format_version") != FORMAT_VERSION:
            raise InputDataError(index_path, "format_version", str(FORMAT_VERSION), index.get("format_version"))
        if not index["mice"]:
            raise InputDataError(index_path, "mice", "at least one mouse", "none")
        self.mice: tuple[str, ...] = tuple(index["mice"])
        self._meta: dict[str, MouseMeta] = {}
        for mouse in self.mice:
            meta_path = self.path / mouse / "meta.json"
            meta = MouseMeta.from_json(_read_json(meta_path, "mouse metadata"), meta_path)
            if meta.name != mouse:
                raise InputDataError(meta_path, "name", repr(mouse), repr(meta.name))
            self._meta[mouse] = meta
        self._arrays: dict[str, dict[str, ts.TensorStore]] = {}
        self._small: dict[str, dict[str, np.ndarray]] = {}
        self._context: ts.Context | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_arrays"] = {}
        state["_small"] = {}
        state["_context"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, mice={list(self.mice)})"

    def mouse_name(self, mouse: str | int) -> str:
        if isinstance(mouse, (int, np.integer)):
            return self.mice[int(mouse)]
        if mouse not in self._meta:
            raise KeyError(f"unknown mouse {mouse!r}; known: {', '.join(self.mice)}")
        return mouse

    def mouse_index(self, mouse: str | int) -> int:
        return self.mice.index(self.mouse_name(mouse))

    def meta(self, mouse: str | int) -> MouseMeta:
        return self._meta[self.mouse_name(mouse)]

    def arrays(self, mouse: str | int) -> dict[str, ts.TensorStore]:
        """The mouse's four arrays as tensorstore handles, opened (and checked) on first use."""
        name = self.mouse_name(mouse)
        handles = self._arrays.get(name)
        if handles is None:
            with self._lock:
                handles = self._arrays.get(name) or self._open_arrays(name)
                self._arrays[name] = handles
        return handles

    def small_arrays(self, mouse: str | int) -> dict[str, np.ndarray]:
        """Behavior and pupil center of all trials in memory (kilobytes per mouse), read once:
        slicing them costs less than a tensorstore read per clip."""
        name = self.mouse_name(mouse)
        small = self._small.get(name)
        if small is None:
            arrays = self.arrays(name)
            futures = {key: arrays[key].read() for key in SMALL_KEYS}
            small = {key: future.result() for key, future in futures.items()}
            self._small[name] = small
        return small

    def _open_arrays(self, name: str) -> dict[str, ts.TensorStore]:
        """Opens and checks the four arrays of one mouse (callers hold the lock)."""
        if self._context is None:
            self._context = tensorstore_context()
        meta = self._meta[name]
        futures = {key: ts.open(_array_spec(self.path / name / key), open=True, read=True,
                                context=self._context) for key in ARRAY_KEYS}
        handles = {}
        for key, future in futures.items():
            where = self.path / name / key / "zarr.json"
            try:
                handle = future.result()
            except Exception as error:  # tensorstore raises ValueError subclasses
                raise InputDataError(where, key, "a readable zarr v3 array",
                                     " ".join(str(error).split())[:160]) from None
            shape, dtype = meta.shapes()[key], meta.dtypes()[key]
            if tuple(handle.shape) != shape:
                raise InputDataError(where, f"{key} shape", str(shape), str(tuple(handle.shape)))
            if handle.dtype.numpy_dtype != np.dtype(dtype):
                raise InputDataError(where, f"{key} dtype", dtype, str(handle.dtype.numpy_dtype))
            handles[key] = handle
        return handles

    @property
    def max_neurons(self) -> int:
        return max(self._meta[m].n_neurons for m in self.mice)

    def card(self, synthetic: bool | None = None) -> DatasetCard:
        """The dataset card; `synthetic=None` takes it from the sources (a ground_truth/ folder)."""
        mice = []
        for name in self.mice:
            meta = self._meta[name]
            norm = meta.normalization
            mice.append(MouseCard(
                name=name,
                unit_ids=meta.unit_ids.copy(),
                coordinates=meta.coordinates.copy(),
                mean_response=normalization.mean_response(meta.statistics, norm),
                response_scale=norm.response_scale.copy(),
                video_mean=float(norm.video_mean),
                video_std=float(norm.video_std),
                behavior_scale=norm.behavior_scale.copy(),
                pupil_mean=norm.pupil_mean.copy(),
                pupil_std=norm.pupil_std.copy(),
            ))
        first = self._meta[self.mice[0]]
        if synthetic is None:
            synthetic = all(self._meta[m].synthetic for m in self.mice)
        return DatasetCard(mice=tuple(mice), frame_shape=tuple(first.frame_shape),
                           behavior_dim=first.behavior_dim, kind=first.kind, synthetic=bool(synthetic))


def open_store(path: str | Path) -> Store:
    """Opens a converted store; a missing or malformed store raises `InputDataError`."""
    path = Path(path)
    if not path.is_dir():
        raise InputDataError(path, "store", "an existing store folder (made by sensorium_jax.data.convert)",
                             "no such folder")
    return Store(path)


# ----------------------------------------------------------------------------- writing


def source_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of every file of a source folder (cheap to redo)."""
    digest = hashlib.sha256(f"format {FORMAT_VERSION}".encode())
    for folder in ("data", "meta"):
        for directory, subdirs, files in sorted(os.walk(path / folder)):
            subdirs.sort()
            for name in sorted(files):
                file = Path(directory) / name
                info = file.stat()
                digest.update(f"{file.relative_to(path)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _create_array(path: Path, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...],
                  context: ts.Context) -> ts.TensorStore:
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path)},
        "metadata": {
            "shape": list(shape),
            "data_type": dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": {"name": "default"},
            "codecs": _RAW_CODECS,
            "fill_value": 0,
        },
    }
    return ts.open(spec, create=True, context=context).result()


def _chunks(meta: MouseMeta) -> dict[str, tuple[int, ...]]:
    t = meta.n_frames
    tc = min(CHUNK_FRAMES, t)
    small = {key: max(1, SMALL_CHUNK_BYTES // (t * width * 4))
             for key, width in (("behavior", meta.behavior_dim), ("pupil_center", 2))}
    return {
        "videos": (1, tc, *meta.frame_shape),
        "responses": (1, tc, meta.n_neurons),
        "behavior": (min(small["behavior"], max(meta.n_trials, 1)), t, meta.behavior_dim),
        "pupil_center": (min(small["pupil_center"], max(meta.n_trials, 1)), t, 2),
    }


class _NotUint8(Exception):
    """A video value is not an integer in 0..255: store videos as float32 instead."""


def _exact_uint8(video: np.ndarray) -> np.ndarray | None:
    if video.size and (video.min() < 0 or video.max() > 255):
        return None
    as_uint8 = video.astype(np.uint8)
    return as_uint8 if np.array_equal(as_uint8, video) else None


def _meta_of(folder: Any, fingerprint: str, video_dtype: str) -> MouseMeta:
    return MouseMeta(
        name=folder.name,
        kind=folder.kind,
        n_frames=int(folder.lengths.max()),
        frame_shape=tuple(int(s) for s in folder.frame_shape),
        behavior_dim=int(folder.behavior_dim),
        n_neurons=int(folder.n_neurons),
        video_dtype=video_dtype,
        lengths=np.asarray(folder.lengths, np.int64),
        tiers=np.asarray(folder.tiers).astype(str),
        trial_ids=np.asarray(folder.trial_ids, np.int64),
        stimulus_ids=np.asarray(folder.stimulus_ids, np.int64),
        unit_ids=np.asarray(folder.unit_ids, np.int64),
        coordinates=np.asarray(folder.coordinates, np.float32),
        statistics=folder.statistics,
        source=str(Path(folder.path).resolve()),
        fingerprint=fingerprint,
        synthetic=(Path(folder.path) / "ground_truth").is_dir(),
    )


def _write_mouse(folder: Any, target: Path, fingerprint: str, video_dtype: str, progress: bool) -> None:
    """Writes one mouse's group into `target` (a fresh temporary folder)."""
    from tqdm import tqdm

    from sensorium_jax.data.raw import read_trial

    meta = _meta_of(folder, fingerprint, video_dtype)
    context = tensorstore_context()
    target.mkdir(parents=True)
    chunks = _chunks(meta)
    arrays = {key: _create_array(target / key, meta.shapes()[key], meta.dtypes()[key], chunks[key], context)
              for key in ARRAY_KEYS}
    small = {key: np.zeros(meta.shapes()[key], np.float32) for key in ("behavior", "pupil_center")}
    pending: list[ts.Future] = []
    bar = tqdm(range(meta.n_trials), desc=meta.name, unit="trial", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, leave=True)
    try:
        for i in bar:
            trial = read_trial(folder, i)
            length = int(meta.lengths[i])
            video = trial["videos"]
            if video_dtype == "uint8":
                video = _exact_uint8(video)
                if video is None:
                    bar.leave = False
                    raise _NotUint8()
            for future in pending:  # at most one trial's writes in flight: bounded memory
                future.result()
            pending = [arrays["videos"][i, :length].write(video),
                       arrays["responses"][i, :length].write(trial["responses"])]
            for key in small:
                small[key][i, :length] = trial[key]
    finally:
        bar.close()
        for future in pending:  # nothing may still write into the folder once we return
            with contextlib.suppress(Exception):
                future.result()
    for future in pending:
        future.result()
    for key, values in small.items():
        arrays[key].write(values).result()
    (target / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "sensorium_jax": {"format_version": FORMAT_VERSION, "meta": "meta.json"}}}))
    (target / "meta.json").write_text(json.dumps(meta.to_json()))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_index(out: Path, mice: list[str]) -> None:
    temporary = out / f".store.json.{uuid.uuid4().hex}"
    temporary.write_text(json.dumps({"format_version": FORMAT_VERSION, "mice": mice}, indent=1))
    os.replace(temporary, out / "store.json")
    _fsync_dir(out)


def _existing_mice(out: Path) -> list[str]:
    """Mice of an existing store; an unrelated non-empty folder is refused."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise InputDataError(out, "store", "a folder (new or an existing store)", "a file")
    if (out / "store.json").exists():
        return list(open_store(out).mice)
    if any(not p.name.startswith(".") for p in out.iterdir()) and not (out / "zarr.json").exists():
        raise InputDataError(out, "store", "an empty folder or an existing store", "a folder with other files")
    return []


@contextlib.contextmanager
def _locked(out: Path):
    """One converter at a time per store (advisory lock on STORE/.lock)."""
    with open(out / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_compatible(folders: Sequence[Any], existing: Iterable[MouseMeta]) -> None:
    """A store's mice share kind, frame shape and behavior width (one dataset card)."""
    reference = None
    for item in [*existing, *folders]:
        signature = (item.kind, tuple(int(s) for s in item.frame_shape), int(item.behavior_dim))
        if reference is None:
            reference = signature
        elif signature != reference:
            where = getattr(item, "path", item.name)
            raise InputDataError(where, "kind/frame shape/behavior", f"{reference} like the other mice", signature)


def convert(sources: Sequence[str | Path], out: str | Path, progress: bool = True) -> list[str]:
    """Validates every source, then writes each mouse atomically into the store `out`.

    Each mouse is written into a temporary sibling folder and renamed into place; `store.json`
    is replaced atomically after each mouse, so readers see complete mice only, a failure
    loses nothing already there, and an invalid source writes nothing at all. Mice already
    stored from an unchanged source (same fingerprint) are skipped. Returns the mouse names
    of `sources`, in order.
    """
    from sensorium_jax.data.raw import read_mouse_folder

    out = Path(out)
    if not sources:
        raise InputDataError(out, "sources", "at least one mouse folder", "none")
    folders = [read_mouse_folder(source) for source in sources]
    seen: dict[str, Path] = {}
    for folder in folders:
        if folder.name in seen:
            raise InputDataError(folder.path, "mouse name", f"unique folder names (also {seen[folder.name]})",
                                 folder.name)
        seen[folder.name] = folder.path
    existing = _existing_mice(out)
    if existing:
        store = open_store(out)
        _check_compatible(folders, [store.meta(m) for m in existing if m not in seen])
    else:
        _check_compatible(folders, [])

    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        mice = _existing_mice(out)  # again, under the lock
        for stale in out.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in out.glob(".trash-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if not (out / "zarr.json").exists():
            (out / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
        for folder in folders:
            fingerprint = source_fingerprint(Path(folder.path))
            final = out / folder.name
            if folder.name in mice and _stored_fingerprint(final) == fingerprint:
                continue
            _write_atomically(folder, final, fingerprint, progress)
            if folder.name not in mice:
                mice.append(folder.name)
            _write_index(out, mice)
    return [folder.name for folder in folders]


def _stored_fingerprint(final: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((final / "meta.json").read_text()).get("fingerprint")
    return None


def _write_atomically(folder: Any, final: Path, fingerprint: str, progress: bool) -> None:
    token = uuid.uuid4().hex[:12]
    temporary = final.parent / f".tmp-{folder.name}-{token}"
    try:
        try:
            _write_mouse(folder, temporary, fingerprint, "uint8", progress)
        except _NotUint8:
            shutil.rmtree(temporary, ignore_errors=True)
            _write_mouse(folder, temporary, fingerprint, "float32", progress)
        _fsync_dir(temporary)
        if final.exists():  # a changed source or a leftover: swap it out
            trash = final.parent / f".trash-{folder.name}-{token}"
            os.rename(final, trash)
            os.rename(temporary, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(temporary, final)
        _fsync_dir(final.parent)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
