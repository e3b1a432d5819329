"""One process of a multi-process run, watched from outside so a lost peer ends in one line.

When another process of the run dies, JAX's coordination service notices the missing
heartbeats and aborts the survivors from C++ (SIGABRT and a stack dump): nothing in Python can
catch that. So `train.py` runs each process of an explicit multi-process run as a child of a
small parent that forwards its output and signals, and turns that abort into one clear line
and its own exit status.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import NoReturn

from sensorium_jax.errors import PEER_LOST_EXIT

CHILD_ENV = "SENSORIUM_JAX_SUPERVISED"
# What the coordination service writes when a peer stops answering.
PEER_LOST_MARKERS = ("heartbeat", "coordination service", "CoordinationService", "has disconnected", "UNAVAILABLE")


def is_supervised() -> bool:
    """Whether this process is the child a supervisor started."""
    return os.environ.get(CHILD_ENV) == "1"


def _die_with_parent() -> None:
    """The child is killed with its parent (Linux), so a killed rank leaves no orphan behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


TAIL_CHARACTERS = 1 << 18  # the abort's reason comes before a stack dump of many small writes


def _forward(source, sink, tail: list[str]) -> None:
    """Copies the child's stderr as it comes (progress bars included) and keeps its last
    `TAIL_CHARACTERS` characters (by size: a dump arrives in reads of a few bytes each)."""
    kept = 0
    while chunk := os.read(source.fileno(), 65536):
        sink.buffer.write(chunk)
        sink.flush()
        tail.append(chunk.decode(errors="replace"))
        kept += len(tail[-1])
        while kept - len(tail[0]) >= TAIL_CHARACTERS:
            kept -= len(tail.pop(0))


def run_supervised(process_id: int, heartbeat_timeout_s: int) -> NoReturn:
    """Runs this very command as a child and exits with its status; an abort after a lost peer
    becomes one `error:` line and exit status `PEER_LOST_EXIT`."""
    child = subprocess.Popen([sys.executable, *sys.argv], env={**os.environ, CHILD_ENV: "1"},
                             stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda received, _frame: child.send_signal(received))
    tail: list[str] = []
    reader = threading.Thread(target=_forward, args=(child.stderr, sys.stderr, tail), daemon=True)
    reader.start()
    code = child.wait()
    reader.join(timeout=5)
    if code == -signal.SIGABRT:
        text = "".join(tail)
        if any(marker in text for marker in PEER_LOST_MARKERS):
            print(f"error: process {process_id} stopped: another process of this multi-process run stopped "
                  f"answering (no heartbeat for {heartbeat_timeout_s} s). Checkpoints saved before are kept: "
                  "restart every process with the same command to resume.", file=sys.stderr, flush=True)
            raise SystemExit(PEER_LOST_EXIT)
        print(f"error: process {process_id} was aborted by the runtime (SIGABRT); the lines above say why",
              file=sys.stderr, flush=True)
    raise SystemExit(code if code >= 0 else 128 - code)
