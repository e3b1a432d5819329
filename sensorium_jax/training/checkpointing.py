"""orbax checkpoints: the latest (to resume) and the best by validation score (to use).

Each checkpoint is self-contained: train state, input-iterator state, the host-side
schedule state, the config and the dataset card travel together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import orbax.checkpoint as ocp

from sensorium_jax.training.state import abstract_like

LATEST = "latest"
BEST = "best"


def _manager(directory: Path, *, best: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        enable_async_checkpointing=True,
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
        manager = self.latest if kind == LATEST else self.best
        step = manager.latest_step() if step is None else step
        items = {
            "state": ocp.args.StandardRestore(abstract_like(state_like)),
            "meta": ocp.args.JsonRestore(),
        }
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        restored = manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["meta"]

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


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
