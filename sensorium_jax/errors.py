"""User-facing errors: one clear line naming the file, the field and what was expected, and the
exit status of every command-line entry point (`run_cli`).

Exit statuses (documented in README.md, "Exit statuses"):
    0    success
    2    bad input: data folder, store, config value or path (`InputDataError`)
    3    out of memory (XLA's RESOURCE_EXHAUSTED): one line with what to change
    4    the training loss became NaN/inf (`NonFiniteLossError`); the last good checkpoint is kept
    5    the disk is full (no space left while writing); checkpoints written before are kept
    6    another process of a multi-process run stopped answering (`sensorium_jax.supervisor`)
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class InputDataError(ValueError):
    """Bad user input (a data folder, a store, a config value).

    Command-line entry points turn it into one line on stderr and exit status 2, without a
    traceback, because the fix is in the user's data, not in our code.
    """

    def __init__(self, path: str | Path, field: str, expected: str, found: Any = None):
        self.path = str(path)
        self.field = field
        self.expected = expected
        self.found = found
        message = f"{self.path}: {field}: expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/inf; the last good checkpoint is left untouched."""


INPUT_ERROR_EXIT = 2
OUT_OF_MEMORY_EXIT = 3
NON_FINITE_LOSS_EXIT = 4
DISK_FULL_EXIT = 5
PEER_LOST_EXIT = 6
INTERRUPTED_EXIT = 130

OUT_OF_MEMORY_HINT = (
    "the step does not fit in memory. Lower the batch (data.clips_per_mouse, or data.batch_size "
    "with uniform mouse sampling) or data.clip_length, or try model.compute_dtype=bfloat16 or "
    "the model's remat option; on CPU, XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false "
    "often halves a step's memory. Checkpoints saved before are kept."
)


def is_out_of_memory(error: BaseException) -> bool:
    """XLA reports exhausted device or host memory as a runtime error with this status."""
    return isinstance(error, RuntimeError) and "RESOURCE_EXHAUSTED" in str(error)


def is_disk_full(error: BaseException | None) -> bool:
    """Whether an error, or one it was raised from, is the OS saying the disk is full: orbax and
    tensorstore re-raise the OS's ENOSPC wrapped in their own exceptions."""
    seen = 0
    while error is not None and seen < 8:
        if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def run_cli(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs a command-line main; the failures a user can act on become one stderr line (no
    traceback) and their own exit status (module docstring); anything else keeps its traceback."""
    try:
        return main(*args, **kwargs)
    except InputDataError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(INPUT_ERROR_EXIT) from None
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(NON_FINITE_LOSS_EXIT) from None
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        detail = str(error).strip().splitlines()[0]
        print(f"error: out of memory ({detail}): {OUT_OF_MEMORY_HINT}", file=sys.stderr)
        raise SystemExit(OUT_OF_MEMORY_EXIT) from None
    except KeyboardInterrupt as interrupted:  # training's says where its checkpoint went
        print(str(interrupted) or "interrupted", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT) from None
    except Exception as error:  # noqa: BLE001 - only a full disk is turned into one line
        if not is_disk_full(error):
            raise
        print(f"error: no space left on device ({str(error).strip().splitlines()[0][:200]}); free some space "
              "and rerun the same command: checkpoints written before are kept", file=sys.stderr)
        raise SystemExit(DISK_FULL_EXIT) from None
