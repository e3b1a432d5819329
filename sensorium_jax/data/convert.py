"""Conversion of official mouse folders into the store, and its CLI.

    python -m sensorium_jax.data.convert SRC_FOLDER... --out STORE [--quiet]

Validates every source folder first, then writes each mouse atomically into the zarr v3
store (layout: `sensorium_jax.data.store`; chunks: `sensorium_jax.data.schema`). Re-running
with the same sources is a no-op. Bad input ends with one `error: ...` line and exit status 2.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts
from absl import flags

from sensorium_jax.data import cli
from sensorium_jax.data import statistics as stats_lib
from sensorium_jax.data.schema import (
    ARRAY_KEYS,
    FORMAT_VERSION,
    RAW_CODECS,
    SMALL_KEYS,
    SOURCE_STATISTICS_FILE,
    chunks,
    tensorstore_context,
)
from sensorium_jax.data.store import MouseMeta, open_store
from sensorium_jax.errors import InputDataError

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
            "codecs": RAW_CODECS,
            "fill_value": 0,
        },
    }
    return ts.open(spec, create=True, context=context).result()


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
        statistics_layout=folder.statistics_layout,
        stimulus_types=np.asarray(folder.stimulus_types).astype(str),
    )


def _write_mouse(folder: Any, target: Path, fingerprint: str, video_dtype: str, progress: bool) -> None:
    """Writes one mouse's group into `target` (a fresh temporary folder)."""
    from tqdm import tqdm

    from sensorium_jax.data.raw import read_trial  # late: tests replace raw.read_trial

    meta = _meta_of(folder, fingerprint, video_dtype)
    context = tensorstore_context()
    target.mkdir(parents=True)
    shapes = chunks(meta.n_trials, meta.n_frames, meta.frame_shape, meta.n_neurons, meta.behavior_dim)
    arrays = {key: _create_array(target / key, meta.shapes()[key], meta.dtypes()[key], shapes[key], context)
              for key in ARRAY_KEYS}
    small = {key: np.zeros(meta.shapes()[key], np.float32) for key in SMALL_KEYS}
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
    if meta.statistics_layout != stats_lib.PER_NEURON:  # per-neuron: meta.json holds them as given
        _write_source_statistics(target / SOURCE_STATISTICS_FILE, folder.source_statistics)
    (target / "meta.json").write_text(json.dumps(meta.to_json()))


def _write_source_statistics(file: Path, given: stats_lib.Statistics) -> None:
    arrays = {f"{key}/{group}/{stat}": np.asarray(value, np.float32)
              for key, groups in given.items() for group, values in groups.items() for stat, value in values.items()}
    np.savez(file, **arrays)


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
    from sensorium_jax.data.raw import read_mouse_folder  # late: the reader imports the store

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
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return json.loads((final / "meta.json").read_text())["fingerprint"]
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


# ----------------------------------------------------------------------------- CLI


def define_flags() -> None:
    """This CLI's flags (registered only when it runs as a program)."""
    flags.DEFINE_string("out", None, "store folder (created or updated)", required=True)
    flags.DEFINE_boolean("quiet", False, "no progress bars")


def main(argv: Sequence[str]) -> None:
    """Converts the mouse folders named after the program name into `--out`."""
    sources = cli.positional(argv, "mouse folders")
    out = Path(flags.FLAGS.out)
    started = time.perf_counter()
    names = convert(sources, out, progress=not flags.FLAGS.quiet)
    store = open_store(out)
    print(f"{len(names)} mice converted or up to date in {time.perf_counter() - started:.1f} s; "
          f"{out} holds {len(store.mice)}: {', '.join(store.mice)}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
