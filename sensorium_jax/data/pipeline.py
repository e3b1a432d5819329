"""The grain input pipeline: training clips and whole evaluation trials, read from the store.

Batches are dicts of numpy arrays, channels last:
`video [B, T, H, W, 1]`, `behavior [B, T, k]`, `pupil_center [B, T, 2]`,
`responses [B, T, Nmax]` (zero beyond a mouse's N), `neuron_mask [B, Nmax]`,
`frame_mask [B, T]`, `mouse int32 [B]`; evaluation batches add `trial` and `stimulus`.
All values are normalized as the reference kit does (`sensorium_jax.data.normalization`), in
the store's mode (`data.datasets.NormalizedStore`; a plain store per neuron) unless a
`normalization` mode is given: per neuron, per frame (a clip starting at frame s uses the
statistics of frames s..s+T-1), or "none" (raw inputs and responses).

Training batches come from `grain.MapDataset.range(...)` mapped by a reader of step i,
so step i is a pure function of (seed, i): an iterator's state is one integer, restores
exactly, and each process of a multi-host run reads its contiguous slice of the same global
batch. Each batch issues all of its tensorstore reads before waiting on any (measured ~5x
faster than reading one by one); grain's thread prefetch overlaps batches with compute.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
import tensorstore as ts

from sensorium_jax.data import normalization as norm_lib
from sensorium_jax.data.datasets import mouse_normalization
from sensorium_jax.data.sampling import ClipSampler
from sensorium_jax.data.store import Store
from sensorium_jax.errors import InputDataError


class BufferPool:
    """Reuses big batch arrays once nothing else references them.

    A fresh 100 MB batch costs the kernel a page fault and a zeroing pass per page, as much as
    the normalization itself; reusing buffers saves it. An array is handed out again only
    when its reference count shows that only the pool holds it: a consumer that keeps a
    batch, a view of it, or a zero-copy JAX array of it (which references it) keeps it out.
    """

    def __init__(self, limit: int = 16):
        self.limit = limit
        self._arrays: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            for array, count in zip(arrays, _refcounts(arrays)):
                if count <= _UNREFERENCED:
                    return array
            array = np.empty(shape, dtype)
            if len(arrays) < self.limit:
                arrays.append(array)
            return array

    def __getstate__(self) -> dict:
        return {"limit": self.limit}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"])


def _refcounts(arrays: list[np.ndarray]) -> list[int]:
    return [sys.getrefcount(array) for array in arrays]


# What `_refcounts` reads for an array that only its list holds, measured by the same code
# (interpreters differ in how many temporary references a loop variable adds).
_UNREFERENCED = _refcounts([np.empty(0)])[0]


class _PendingBatch:
    """Reads issued for a batch of clips; `result()` waits and normalizes clip by clip.

    Tensorstore copies responses and videos (converting uint8 to float32 on the way)
    straight into the padded, pooled batch arrays, which are then normalized in place clip by
    clip; behavior and pupil center are sliced from memory. Reading into temporary arrays
    and normalizing into a fresh batch cost ~1 ms of CPU per 80-frame clip more than a bare
    read (60-70% of the raw rate on 2 cores); this way costs about the same as a bare read.
    """

    def __init__(self, store: Store, clips: np.ndarray, n_frames: int, pool: BufferPool,
                 norms: Mapping[int, norm_lib.Normalization]):
        self.store, self.clips, self.n_frames, self.norms = store, clips, n_frames, norms
        b, t, n_max = len(clips), n_frames, store.max_neurons
        first = store.meta(int(clips[0, 0]) if b else 0)
        h, w = first.frame_shape
        self.batch = batch = {
            "video": pool.empty((b, t, h, w, 1), np.float32),
            "behavior": np.empty((b, t, first.behavior_dim), np.float32),
            "pupil_center": np.empty((b, t, 2), np.float32),
            "responses": pool.empty((b, t, n_max), np.float32),
            "neuron_mask": np.zeros((b, n_max), bool),
            "frame_mask": np.ones((b, t), bool),
            "mouse": clips[:, 0].astype(np.int32),
        }
        responses = ts.array(batch["responses"], copy=False, write=True)
        video = ts.array(batch["video"], copy=False, write=True)
        self.reads = []
        for row, (mouse, trial, start) in enumerate(clips):
            arrays, meta = store.arrays(int(mouse)), store.meta(int(mouse))
            n = meta.n_neurons
            window = (int(trial), slice(int(start), int(start) + t))
            self.reads.append({
                "responses": responses[row, :, :n].write(arrays["responses"][window]),
                "videos": video[row, :, :, :, 0].write(arrays["videos"][window]),
            })
            batch["responses"][row, :, n:] = 0
            batch["neuron_mask"][row, :n] = True

    def result(self) -> dict[str, np.ndarray]:
        batch, t = self.batch, self.n_frames
        for row, ((mouse, trial, start), reads) in enumerate(zip(self.clips, self.reads)):
            meta = self.store.meta(int(mouse))
            norm = self.norms[int(mouse)].window(int(start), t, where=self.store.path / meta.name)
            _normalize_reads(batch, row, meta.n_neurons, norm, reads)
            small = self.store.small_arrays(int(mouse))
            window = (int(trial), slice(int(start), int(start) + t))
            if norm.applied:
                norm_lib.normalize_behavior(small["behavior"][window], norm, out=batch["behavior"][row])
                norm_lib.normalize_pupil(small["pupil_center"][window], norm, out=batch["pupil_center"][row])
            else:
                batch["behavior"][row] = small["behavior"][window]
                batch["pupil_center"][row] = small["pupil_center"][window]
            valid = int(meta.lengths[int(trial)]) - int(start)
            if valid < t:  # padding frames of a shorter trial: masked and zeroed
                batch["frame_mask"][row, valid:] = False
                for key in ("video", "behavior", "pupil_center", "responses"):
                    batch[key][row, valid:] = 0
        self.reads = []
        return batch


def _normalize_reads(batch: dict[str, np.ndarray], row: int, n: int, norm: norm_lib.Normalization,
                     reads: dict) -> None:
    """Normalizes one clip's video where tensorstore wrote it while its responses still arrive,
    then the responses ("none": only waits)."""
    reads["videos"].result()
    if norm.applied:
        video = batch["video"][row, ..., 0]
        norm_lib.normalize_video(video, norm, out=video)
    reads["responses"].result()
    if norm.applied:
        responses = batch["responses"][row, :, :n]
        norm_lib.normalize_responses(responses, norm, out=responses)


def store_normalizations(store: Store, normalization: str | None = None) -> dict[int, norm_lib.Normalization]:
    """Mouse index -> its normalization, in the `normalization` mode or the store's."""
    return {index: mouse_normalization(store, mouse, normalization) for index, mouse in enumerate(store.mice)}


class _ReadStep:
    """grain map: step index -> this process's share of that step's global batch.

    With several samplers (an ensemble's members, each with its own seed) the batch stacks one
    batch per sampler on a leading member axis ([members, B, ...]); all their reads are issued
    together."""

    def __init__(self, store: Store, samplers: Sequence[ClipSampler], process_index: int, process_count: int,
                 pool_size: int, norms: Mapping[int, norm_lib.Normalization], stacked: bool = False):
        self.store, self.samplers, self.norms, self.stacked = store, tuple(samplers), norms, stacked
        share = self.samplers[0].batch_size // process_count
        self.rows = slice(process_index * share, (process_index + 1) * share)
        self.pool = BufferPool(pool_size)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        clips = np.concatenate([sampler(step)[self.rows] for sampler in self.samplers])
        batch = _PendingBatch(self.store, clips, self.samplers[0].clip_length, self.pool, self.norms).result()
        if not self.stacked:
            return batch
        members = len(self.samplers)
        return {key: value.reshape(members, value.shape[0] // members, *value.shape[1:])
                for key, value in batch.items()}


def make_sampler(
    store: Store,
    *,
    clip_length: int,
    seed: int,
    clips_per_mouse: int = 8,
    mouse_sampling: str = "all",
    batch_size: int | None = None,
    tiers: Sequence[str] = ("train",),
) -> ClipSampler:
    """The clip plan of the training set (also tells the global batch size)."""
    metas = [store.meta(m) for m in store.mice]
    return ClipSampler(
        [m.lengths for m in metas], [m.tiers for m in metas], clip_length=clip_length, train_tiers=tuple(tiers),
        seed=seed, mouse_sampling=mouse_sampling, clips_per_mouse=clips_per_mouse, batch_size=batch_size,
        where=str(store.path),
    )


def make_train_dataset(
    store: Store,
    *,
    clip_length: int,
    clips_per_mouse: int = 8,
    mouse_sampling: str = "all",
    batch_size: int | None = None,
    seed: int,
    tiers: Sequence[str] = ("train",),
    process_index: int = 0,
    process_count: int = 1,
    read_threads: int = 4,
    prefetch: int = 4,
    num_steps: int | None = None,
    normalization: str | None = None,
    member_seeds: Sequence[int] | None = None,
) -> grain.IterDataset:
    """Endless (or `num_steps`) process-local training batches; see the module docstring.

    `read_threads` batches are read concurrently (at most `prefetch` of them), up to
    `prefetch` ahead of the consumer, so memory is about `prefetch + 2` batches whatever the
    data set size. The global batch is `len(store.mice) * clips_per_mouse` ("all") or
    `batch_size` ("uniform"); it must divide evenly between processes. `normalization`: a
    mode of `data.normalization` (default: the store's).

    With `member_seeds` (an ensemble; `seed` is then unused) each step's batch stacks, on a
    leading member axis, the batch a run with each of those seeds reads at that step.
    """
    seeds = [seed] if member_seeds is None else list(member_seeds)
    samplers = [make_sampler(store, clip_length=clip_length, seed=s, clips_per_mouse=clips_per_mouse,
                             mouse_sampling=mouse_sampling, batch_size=batch_size, tiers=tiers) for s in seeds]
    sampler = samplers[0]
    if not 0 <= process_index < process_count or sampler.batch_size % process_count:
        raise InputDataError(store.path, "batch size / processes",
                             f"a global batch divisible by process_count={process_count} "
                             f"and 0 <= process_index < process_count",
                             f"batch {sampler.batch_size}, process {process_index}")
    prefetch = max(int(prefetch), 0)
    threads = min(max(int(read_threads), 0), prefetch)  # grain uses no more threads than buffer slots
    steps = grain.MapDataset.range(num_steps if num_steps is not None else sys.maxsize)
    norms = store_normalizations(store, normalization)
    read = _ReadStep(store, samplers, process_index, process_count, pool_size=prefetch + 2, norms=norms,
                     stacked=member_seeds is not None)
    dataset = steps.map(read)
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))


def make_eval_batches(store: Store, mouse: str | int, tier: str, batch_size: int, *,
                      normalization: str | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Whole trials of one tier of one mouse, in store order, padded to the tier's longest.

    The last batch may be smaller. `frame_mask` marks valid frames; padded frames are zero.
    `trial` is the trial's index within the mouse, `stimulus` a dense id (equal = repeat).
    The reads of the next batch are issued before the current one is yielded. Values are in
    the `normalization` mode (default: the store's), responses included: with "none" they stay
    raw like the model's predictions, so scores compare like with like.
    """
    meta = store.meta(mouse)
    index = store.mouse_index(mouse)
    trials = meta.trials_of(tier)
    if len(trials) == 0:
        return
    if batch_size < 1:
        raise InputDataError(store.path, "eval batch_size", "a positive number of trials", batch_size)
    n_frames = int(meta.lengths[trials].max())
    chunks = [trials[i : i + batch_size] for i in range(0, len(trials), batch_size)]

    pool = BufferPool(limit=3)  # reused only once the caller has let go of a batch
    norms = {index: mouse_normalization(store, mouse, normalization)}

    def issue(chunk: np.ndarray) -> _PendingBatch:
        clips = np.stack([np.full(len(chunk), index), chunk, np.zeros(len(chunk), np.int64)], 1)
        return _PendingBatch(store, clips.astype(np.int64), n_frames, pool, norms)

    pending = issue(chunks[0])
    for k, chunk in enumerate(chunks):
        current = pending
        if k + 1 < len(chunks):
            pending = issue(chunks[k + 1])
        batch = current.result()
        batch["trial"] = chunk.astype(np.int32)
        batch["stimulus"] = meta.stimulus_index[chunk]
        yield batch
