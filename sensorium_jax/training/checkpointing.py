"""orbax checkpoints: the latest (to resume) and the best by validation score (to use).

Each checkpoint is self-contained: train state, input-iterator state, the host-side
schedule state, the config and the dataset card travel together.

A run killed mid-write, a full disk or a damaged file must not end a resume with a
traceback while an intact checkpoint is there: `resume` tries them newest first (the two
kept in `latest`, then `best`), warns in one line about each damaged one, and moves damaged
ones newer than the one it used to `checkpoints/damaged/` (kept for inspection; orbax would
refuse to save their step again).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp

from sensorium_jax.errors import InputDataError, is_out_of_memory
from sensorium_jax.training.state import abstract_like

LATEST = "latest"
BEST = "best"
DAMAGED = "damaged"
KEEP_LATEST = 2  # an older one to fall back on when the newest was damaged


def _manager(directory: Path, *, best: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1 if best else KEEP_LATEST,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,  # what a run killed during a save left half-written
        best_fn=(lambda metrics: metrics["validation_correlation"]) if best else None,
        best_mode="max",
        create=True,
        # Both managers save at the same step; without their own barrier keys the processes of a
        # multi-process run can meet at the other manager's barrier and wait forever.
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name),
    )
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "meta": ocp.JsonCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
    }
    # orbax wants absolute paths; the workdir the user typed may be relative to the current folder
    return ocp.CheckpointManager(directory.absolute(), options=options, item_handlers=handlers)


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What `Checkpoints.resume` restored, and from where."""

    state: Any
    meta: dict
    step: int
    directory: Path  # the step folder


class Checkpoints:
    """The two managers of a workdir (`checkpoints/latest`, `checkpoints/best`)."""

    def __init__(self, workdir: str | Path):
        root = Path(workdir) / "checkpoints"
        self.root = root
        self.latest = _manager(root / LATEST, best=False)
        self.best = _manager(root / BEST, best=True)

    def save(self, kind: str, step: int, state: Any, iterator: Any, meta: dict, score: float | None) -> None:
        manager = self.latest if kind == LATEST else self.best
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(_jsonable(meta))}
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(iterator)
        metrics = {"validation_correlation": float(score)} if score is not None else None
        manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def latest_step(self, kind: str = LATEST) -> int | None:
        manager = self.latest if kind == LATEST else self.best
        return manager.latest_step()

    def restore(self, kind: str, state_like: Any, iterator: Any = None, step: int | None = None) -> tuple[Any, dict]:
        """Restores into the shardings of `state_like`; the iterator is restored in place."""
        manager = self._manager(kind)
        step = manager.latest_step() if step is None else step
        items = {
            "state": ocp.args.StandardRestore(abstract_like(state_like)),
            "meta": ocp.args.JsonRestore(),
        }
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        restored = manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["meta"]

    def resume(self, state_like: Any, iterator: Any, kinds: tuple[str, ...] = (LATEST, BEST)) -> Resumed | None:
        """The newest intact checkpoint of `kinds` (`latest`, `best`; None: there is none at all).

        A damaged one is skipped with a one-line warning; none intact is one `InputDataError` line.
        The best checkpoint has no iterator item: batches are a pure function of (seed, step),
        so the iterator is set to that step (`iterator_at_step`). An ensemble's best checkpoint
        holds each member's best parameters, from different steps, so it resumes from `latest` only.
        """
        candidates = sorted(((step, kind) for kind in kinds for step in self._manager(kind).all_steps()),
                            key=lambda c: (-c[0], c[1] != LATEST))
        damaged: list[tuple[int, str]] = []
        reasons: list[str] = []
        ignore_abandoned_reads()
        for step, kind in candidates:
            mismatch = self.layout_mismatch(kind, step, state_like)
            if mismatch:  # intact, but of another model or train-state layout: nothing is moved
                raise InputDataError(self.root / kind / str(step), "state", "the train state this config builds",
                                     f"another layout ({mismatch}): written by another model or version; "
                                     "move the workdir aside to start over")
            try:
                state, meta = self.restore(kind, state_like, iterator if kind == LATEST else None, step)
                if kind != LATEST and iterator is not None:
                    iterator_at_step(iterator, step)
            except Exception as error:  # noqa: BLE001 - any failure to read it means it is unusable
                if is_out_of_memory(error):
                    raise
                damaged.append((step, kind))
                reasons.append(damage_reason(error))
                continue
            for (bad_step, bad_kind), reason in zip(damaged, reasons):  # only when one was intact
                _warn(f"checkpoint {self.root / bad_kind / str(bad_step)} is damaged ({reason}); "
                      f"resuming from {kind}/{step} instead")
            self._set_aside([(s, k) for s, k in damaged if s >= step])
            return Resumed(state, meta, step, self.root / kind / str(step))
        if not candidates:
            return None
        raise InputDataError(self.root, "checkpoints", "at least one intact checkpoint to resume from",
                             f"{len(candidates)} damaged ({', '.join(f'{k}/{s}' for s, k in candidates)}; "
                             f"the newest: {reasons[0]}); move the workdir aside to start over")

    def _manager(self, kind: str) -> ocp.CheckpointManager:
        return self.latest if kind == LATEST else self.best

    def layout_mismatch(self, kind: str, step: int, state_like: Any) -> str:
        """The first difference between a checkpoint's saved arrays (paths and shapes, from its
        metadata) and `state_like`'s; empty when they agree or the metadata cannot be read (a
        damaged checkpoint is then reported by its restore)."""
        try:
            saved = _shapes(self._manager(kind).item_metadata(step)["state"])
        except Exception:  # noqa: BLE001 - unreadable metadata: left to the restore to report
            return ""
        wanted = _shapes(state_like)
        # random keys are saved as their raw data: the key's shape plus the implementation's own
        keys = {path for path, leaf in _leaves(state_like).items()
                if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)}
        for path in sorted(set(saved) | set(wanted)):
            if path not in saved:
                return f"{path} is not in the checkpoint"
            if path not in wanted:
                return f"the checkpoint has {path}, which this model does not"
            if saved[path][: len(wanted[path])] != wanted[path] or (
                    len(saved[path]) != len(wanted[path]) and path not in keys):
                return f"{path}: shape {saved[path]} in the checkpoint, {wanted[path]} here"
        return ""

    def _set_aside(self, damaged: list[tuple[int, str]]) -> None:
        """Moves damaged steps out of their manager (orbax would refuse to save their step again)."""
        if not damaged:
            return
        if jax.process_index() == 0:
            (self.root / DAMAGED).mkdir(exist_ok=True)
            for step, kind in damaged:
                target = self.root / DAMAGED / f"{kind}-{step}"
                if target.exists():
                    shutil.rmtree(target)
                (self.root / kind / str(step)).rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("sensorium_jax_checkpoints_set_aside")
        self.latest.reload()
        self.best.reload()

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """A tree's array shapes by path (see `_leaves`)."""
    return {path: tuple(leaf.shape) for path, leaf in _leaves(tree).items()}


def _leaves(tree: Any) -> dict[str, Any]:
    """A tree's leaves by path ("params/core/layers/0/kernel/value"), whatever containers
    (dataclass fields, dicts, lists) hold them."""
    def name(key: Any) -> str:
        if isinstance(key, (jax.tree_util.DictKey, jax.tree_util.FlattenedIndexKey)):
            return str(key.key)
        if isinstance(key, jax.tree_util.GetAttrKey):
            return key.name
        if isinstance(key, jax.tree_util.SequenceKey):
            return str(key.idx)
        return str(key)

    return {"/".join(name(k) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


_ABANDONED_READS_IGNORED = False


def ignore_abandoned_reads() -> None:
    """When a restore fails, orbax closes its event loop while tensorstore still has reads of
    the damaged checkpoint in flight; each one that finishes reports to the closed loop, which
    Python prints as an "Event loop is closed" traceback that would bury the one-line warning.
    The reports can land before the restore's error even reaches the caller, so this is set up
    before the first restore, once per process; only those errors are dropped, however they
    are reported, and any other still prints."""
    global _ABANDONED_READS_IGNORED
    if _ABANDONED_READS_IGNORED:
        return
    _ABANDONED_READS_IGNORED = True
    sys.unraisablehook = _skipping_abandoned_reads(sys.unraisablehook, lambda unraisable: unraisable.exc_value)
    threading.excepthook = _skipping_abandoned_reads(threading.excepthook, lambda args: args.exc_value)
    # tensorstore's native callbacks report a Python error with PyErr_Print, i.e. through
    # sys.excepthook: a bare traceback with no header.
    sys.excepthook = _skipping_abandoned_reads(sys.excepthook, lambda kind, error, traceback: error)
    # The same abandoned reads can also end in an ERROR log with a traceback, later and from
    # another thread: orbax's own (absl), asyncio's "Task exception was never retrieved" for
    # the read's task, or concurrent.futures' "exception calling callback" when a finished read
    # hands its result to the closed loop. The one-line warning has already said what happened.
    for name in ("absl", "asyncio", "concurrent.futures"):
        logging.getLogger(name).addFilter(_drop_abandoned_read_logs)


def _skipping_abandoned_reads(hook: Callable[..., None],
                              error_of: Callable[..., BaseException | None]) -> Callable[..., None]:
    """`hook` for every error but an abandoned read's."""
    def filtered(*args: Any) -> None:
        if not _is_abandoned_read(error_of(*args)):
            hook(*args)

    return filtered


def _drop_abandoned_read_logs(record: logging.LogRecord) -> bool:
    """False for an error log of orbax's array reader (the damaged checkpoint's reads)."""
    if record.levelno < logging.ERROR:
        return True
    if _in_orbax_reader(record.pathname):
        return False
    error = record.exc_info[1] if record.exc_info else None
    if _is_abandoned_read(error):
        return False
    traceback = error.__traceback__ if error is not None else None
    while traceback is not None:
        if _in_orbax_reader(traceback.tb_frame.f_code.co_filename):
            return False
        traceback = traceback.tb_next
    return "_read_array_index_and_device_put" not in record.getMessage()


def _in_orbax_reader(filename: str) -> bool:
    return "orbax" in filename and "serialization" in filename


def _is_abandoned_read(error: BaseException | None) -> bool:
    """Whether an error or its causes is a cancelled read (GeneratorExit) or a callback to the
    closed event loop."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, GeneratorExit) or "Event loop is closed" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def iterator_at_step(iterator: Any, step: int) -> None:
    """Sets a training iterator to the batch of `step` (its state is the next step's index)."""
    raw = iterator.get_state()  # bytes of JSON (`DevicePrefetcher`) or a dict (grain's own iterator)
    state = json.loads(raw) if isinstance(raw, (bytes, str)) else dict(raw)
    if "next_index" not in state:
        raise ValueError(f"cannot position the input iterator from its state {state!r}")
    state["next_index"] = int(step)
    iterator.set_state(json.dumps(state).encode() if isinstance(raw, (bytes, str)) else state)


def damage_reason(error: BaseException) -> str:
    """The first line of the innermost cause: orbax wraps tensorstore's clear message in a vague one."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
