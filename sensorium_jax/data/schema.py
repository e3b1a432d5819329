"""The store's on-disk schema: format version, array keys, chunking and codecs.

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

from pathlib import Path
from typing import Any

import tensorstore as ts

FORMAT_VERSION = 1
ARRAY_KEYS = ("videos", "responses", "behavior", "pupil_center")
SMALL_KEYS = ("behavior", "pupil_center")
CHUNK_FRAMES = 20  # see the measurements above
SMALL_CHUNK_BYTES = 16384  # behavior / pupil center: trials per chunk up to this size
RAW_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}]
# The statistics of a per-frame source as given ([key/group/stat] -> array), next to meta.json:
# megabytes per mouse ([N, T] responses), too big for a JSON file read at every open.
SOURCE_STATISTICS_FILE = "source_statistics.npz"


def tensorstore_context() -> ts.Context:
    """A per-process context without a chunk cache: memory is bounded by what is in flight."""
    return ts.Context({"cache_pool": {"total_bytes_limit": 0}})


def array_spec(path: Path) -> dict[str, Any]:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}


def chunks(n_trials: int, n_frames: int, frame_shape: tuple[int, int], n_neurons: int,
           behavior_dim: int) -> dict[str, tuple[int, ...]]:
    """Chunk shape of each array of a mouse (see the measurements above)."""
    t = n_frames
    tc = min(CHUNK_FRAMES, t)
    small = {key: max(1, SMALL_CHUNK_BYTES // (t * width * 4))
             for key, width in (("behavior", behavior_dim), ("pupil_center", 2))}
    return {
        "videos": (1, tc, *frame_shape),
        "responses": (1, tc, n_neurons),
        "behavior": (min(small["behavior"], max(n_trials, 1)), t, behavior_dim),
        "pupil_center": (min(small["pupil_center"], max(n_trials, 1)), t, 2),
    }
