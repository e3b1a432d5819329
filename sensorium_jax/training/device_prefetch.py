"""Global batches placed on the devices ahead of the step that needs them.

The step runs asynchronously, so placing batch i + 1 while step i runs hides the host-to-device
copy. Reading ahead must not move the checkpointed input position: the state saved is that of
the oldest batch not yet handed out, so a resumed run sees exactly the batches the interrupted
one had not trained on.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator
from typing import Any

Batch = dict[str, Any]


class DevicePrefetcher:
    """Iterator of placed batches, `size` of them kept ready (0: each placed when asked for);
    checkpointable like its source.

    `source` must offer `get_state()`/`set_state()` (a grain DatasetIterator); `place` turns a
    host batch into device arrays (e.g. `global_batch(batch, mesh)`). Saved through
    `grain.checkpoint.CheckpointSave/Restore` in the same JSON as the source's own state, so
    checkpoints written with or without prefetching restore either way.
    """

    def __init__(self, source: Iterator[Batch], place: Callable[[Batch], Batch], size: int = 2):
        if size < 0:
            raise ValueError(f"data.device_prefetch must be >= 0, got {size}")
        self._source, self._place, self._size = source, place, size
        self._ready: collections.deque[tuple[str, Batch]] = collections.deque()
        self._exhausted = False

    def __iter__(self) -> DevicePrefetcher:
        return self

    def _fill(self, size: int) -> None:
        while len(self._ready) < size and not self._exhausted:
            state = json.dumps(self._source.get_state())  # a snapshot, not a live reference
            try:
                host_batch = next(self._source)
            except StopIteration:
                self._exhausted = True
                return
            self._ready.append((state, self._place(host_batch)))

    def __next__(self) -> Batch:
        self._fill(1)
        if not self._ready:
            raise StopIteration
        _, batch = self._ready.popleft()
        self._fill(self._size)  # dispatches the next placements before the caller's step
        return batch

    def get_state(self) -> bytes:
        """The source's state just before the oldest batch not yet handed out."""
        state = self._ready[0][0] if self._ready else json.dumps(self._source.get_state())
        return state.encode()

    def set_state(self, state: bytes) -> None:
        self._ready.clear()
        self._exhausted = False
        self._source.set_state(json.loads(state))

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore; batches are placed on demand."""
