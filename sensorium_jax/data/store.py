"""The converted data set: one zarr v3 group per mouse, written and read with tensorstore.

Layout (a public format; zarr-python reads it too):

    STORE/zarr.json                 root group
    STORE/store.json                {"format_version", "mice": [names in id order]}
    STORE/<mouse>/zarr.json         group
    STORE/<mouse>/meta.json         lengths, tiers, trial/stimulus/unit ids, stimulus types,
                                    coordinates, statistics (per neuron, as normalization
                                    uses them), their source layout, kind, frame shape,
                                    source fingerprint
    STORE/<mouse>/source_statistics.npz   a per-frame source's statistics as given
    STORE/<mouse>/videos            [trials, T, H, W]  uint8 when exact, else float32
    STORE/<mouse>/responses         [trials, T, N]     float32, the source values exactly
    STORE/<mouse>/behavior          [trials, T, k]     float32
    STORE/<mouse>/pupil_center      [trials, T, 2]     float32

T is the longest trial of the mouse (1 for static 2022 data); frames past a trial's length
hold the fill value 0. `store.json` only ever lists complete mice (see `convert`).

Chunks and codecs (raw bytes, 20-frame response chunks) were chosen by measurement: see
`sensorium_jax.data.schema`. Writing (conversion) lives in `sensorium_jax.data.convert`;
this module reads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from sensorium_jax.data import normalization
from sensorium_jax.data import statistics as stats_lib
from sensorium_jax.data.card import DatasetCard, MouseCard
from sensorium_jax.data.kinds import KINDS, UNKNOWN_STIMULUS_TYPE, DatasetKind, kind_named
from sensorium_jax.data.schema import (
    ARRAY_KEYS,
    FORMAT_VERSION,
    SMALL_KEYS,
    SOURCE_STATISTICS_FILE,
    array_spec,
    tensorstore_context,
)
from sensorium_jax.errors import InputDataError


# ----------------------------------------------------------------------------- metadata


@dataclasses.dataclass(frozen=True, eq=False)
class MouseMeta:
    """Everything about one stored mouse except its arrays."""

    name: str
    kind: str  # "video" | "static"; `dataset_kind` is the object to ask
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
    statistics_layout: str = stats_lib.PER_NEURON  # the source's layout (see `Store.source_statistics`)
    stimulus_types: np.ndarray | None = None  # str [trials]; "unknown" where the source did not say

    def __post_init__(self) -> None:
        if self.stimulus_types is None:
            object.__setattr__(self, "stimulus_types", np.full(self.n_trials, UNKNOWN_STIMULUS_TYPE))

    @property
    def dataset_kind(self) -> DatasetKind:
        return kind_named(self.kind)

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
        return normalization.from_statistics(self.statistics, self.dataset_kind)

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
            "statistics_layout": self.statistics_layout,
            "stimulus_types": [str(t) for t in self.stimulus_types],
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
        kind_name = field("kind", str)
        if kind_name not in KINDS:
            raise InputDataError(path, "kind", " or ".join(map(repr, KINDS)), repr(kind_name))
        kind = kind_named(kind_name)
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
        for key in kind.array_keys:
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
        # Stores converted before these two fields existed: per-neuron sources, types unknown.
        layout = raw.get("statistics_layout", stats_lib.PER_NEURON)
        if layout not in stats_lib.LAYOUTS:
            raise InputDataError(path, "statistics_layout", " or ".join(map(repr, stats_lib.LAYOUTS)), repr(layout))
        types = raw.get("stimulus_types", [UNKNOWN_STIMULUS_TYPE] * n)
        if not isinstance(types, list) or len(types) != n:
            raise InputDataError(path, "stimulus_types", f"a list of {n} strings (one per trial)", repr(types)[:80])
        return cls(
            name=field("name", str),
            kind=kind.name,
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
            source=field("source", str),
            fingerprint=field("fingerprint", str),
            synthetic=field("synthetic", bool),
            statistics_layout=layout,
            stimulus_types=np.asarray([str(t) for t in types]),
        )


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputDataError(path, what, "an existing file", "no such file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputDataError(path, what, "valid JSON", " ".join(str(error).split())[:120]) from None


# ----------------------------------------------------------------------------- reading


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

    def source_statistics(self, mouse: str | int) -> stats_lib.Statistics:
        """The mouse's statistics as its source gave them (per frame or per neuron)."""
        meta = self.meta(mouse)
        if meta.statistics_layout == stats_lib.PER_NEURON:
            return meta.statistics
        file = self.path / meta.name / SOURCE_STATISTICS_FILE
        if not file.is_file():
            raise InputDataError(file, "source statistics", "an existing .npz file (per-frame source)",
                                 "no such file")
        given: stats_lib.Statistics = {}
        with np.load(file, allow_pickle=False) as arrays:
            for name in arrays.files:
                key, group, stat = name.split("/")
                given.setdefault(key, {}).setdefault(group, {})[stat] = arrays[name]
        return given

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
        futures = {key: ts.open(array_spec(self.path / name / key), open=True, read=True,
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
