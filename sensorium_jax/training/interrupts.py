"""Ctrl-C and SIGTERM stop training at a step boundary, so the loop can save where it stopped.

A signal arriving mid-step used to raise KeyboardInterrupt wherever Python was, losing every
step since the last evaluation. Here the first SIGINT/SIGTERM only sets a flag that the loop
reads after each step; a second one aborts at once (the old behaviour).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import jax
import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint; `str()` is the line to print."""


class StopRequest:
    """The flag the signal handlers set, installed for the life of the training loop."""

    def __init__(self) -> None:
        self._requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._requested:  # the second signal: stop waiting for the step
            self.restore()
            raise KeyboardInterrupt
        self._requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step to save a checkpoint "
              "(send it again to abort without saving)", file=sys.stderr, flush=True)

    def request(self) -> None:
        """Asks for a stop as a signal would (tests, callers embedding the loop)."""
        self._requested = True

    def should_stop(self, step: int, every: int) -> bool:
        """Whether to stop after `step`. In a multi-process run every process must stop at the
        same step (saving meets at orbax's barriers), so they agree every `every` steps."""
        if jax.process_count() == 1:
            return self._requested
        if step % every:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self._requested))
        return bool(np.any(flags))
