"""One training run per workdir, and only with a config its checkpoints can follow.

Two `train.py` on one workdir used to both run, doubling every metrics record; a rerun with a
changed model overwrote `config.json` and then died in orbax. The lock is an `fcntl.flock` on
`workdir/.lock`: the OS drops it when the holder exits or dies, so a lock file left by a killed
run never blocks the next one.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from sensorium_jax.config_checks import ConfigError, resume_problems
from sensorium_jax.errors import InputDataError

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"


class WorkdirLock:
    """An exclusive, non-blocking lock on `workdir` for the life of a run (a context manager)."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> WorkdirLock:
        """Takes the lock or raises `InputDataError` naming the workdir and the holder's PID."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise InputDataError(self.path.parent, "workdir", "a workdir no other training uses",
                                 f"it is locked by a running training (PID {holder}, lock {self.path}); "
                                 "wait for it or choose another --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def has_checkpoint(workdir: str | Path) -> bool:
    """Whether `workdir` holds a finished checkpoint a run would resume from (orbax names the
    folder of a finished one by its step)."""
    root = Path(workdir) / "checkpoints"
    return any(d.is_dir() and any(p.name.isdigit() for p in d.iterdir())
               for d in (root / "latest", root / "best"))


def check_resumable(workdir: str | Path, config_json: dict) -> None:
    """Refuses (exit status 2) a config the workdir's checkpoints cannot resume, before anything
    in the workdir changes; a workdir without a checkpoint takes any config."""
    saved_path = Path(workdir) / CONFIG_FILE
    if not has_checkpoint(workdir) or not saved_path.is_file():
        return
    try:
        saved = json.loads(saved_path.read_text())
    except json.JSONDecodeError as error:
        raise InputDataError(saved_path, "config", "the JSON config of the run that wrote the checkpoints",
                             str(error)) from None
    problems = resume_problems(saved, config_json)
    if problems:
        raise ConfigError(
            problems + [f"(resuming {workdir} needs its old values: rerun with them, or use another --workdir)"],
            path=f"{saved_path}: cannot resume with a changed config")
