"""Reading a trained model back from a checkpoint: only what prediction needs.

A training checkpoint holds the whole train state (parameters, their EMA, Adam's two moments,
batch statistics). Prediction needs the inference parameters (the EMA when the run kept one)
and the non-parameter state; the optimizer moments are twice the parameters' size (more than
1 GB for the 14-member ensemble or DwiseNeuro), so they are never built nor read: the model is
built abstractly and orbax restores just that part of the `state` item.

orbax wants absolute paths; users type relative ones. Paths are resolved here, at the edge.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from sensorium_jax.data import normalization as norm_lib
from sensorium_jax.data.card import CARD_FILE, DatasetCard
from sensorium_jax.errors import InputDataError, is_out_of_memory
from sensorium_jax.models import build_model
from sensorium_jax.training.checkpointing import damage_reason, ignore_abandoned_reads
from sensorium_jax.training.state import uses_ema

Variables = dict[str, nnx.State]  # {"params": ..., "rest": ...}: what `Predictor.apply` takes


@dataclasses.dataclass(frozen=True)
class Restored:
    """A checkpoint's model, read for prediction only."""

    config: ml_collections.ConfigDict
    card: DatasetCard
    graphdef: nnx.GraphDef
    variables: Variables
    checkpoint: Path  # as the user named it (relative paths stay relative)


def checkpoint_candidates(path: str | Path) -> list[Path]:
    """The step folders `path` names, in the order to try them: a step folder alone; else a
    workdir's best then latest checkpoints (newest first), or a manager folder's steps."""
    path = Path(path).expanduser()
    if (path / "state").is_dir() and (path / "meta").is_dir():
        return [path]
    found = [step for folder in (path / "checkpoints" / "best", path / "checkpoints" / "latest")
             for step in _steps(folder)]
    found = found or _steps(path)
    if not found:
        raise InputDataError(path, "checkpoint", "a workdir with checkpoints/best or a checkpoint step folder",
                             "no finished checkpoint")
    return found


def _steps(folder: Path) -> list[Path]:
    """Finished step folders, newest first (orbax writes to a temporary name, renamed when done)."""
    if not folder.is_dir():
        return []
    steps = [p for p in folder.iterdir() if p.name.isdigit() and (p / "state").is_dir()]
    return sorted(steps, key=lambda p: int(p.name), reverse=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A workdir (its best, else latest, checkpoint), a manager folder, or one step folder,
    named as the user typed it (relative to the current folder, or absolute)."""
    return checkpoint_candidates(path)[0]


def read_checkpoint_meta(checkpoint: Path) -> dict:
    """The JSON item (config, dataset card, schedule state) of one checkpoint step."""
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(Path(checkpoint).absolute() / "meta")
    for key in ("config", "dataset_card"):
        if key not in meta:
            raise InputDataError(checkpoint / "meta", key, "the training config and dataset card", "missing")
    return meta


def inference_target(params: nnx.State, rest: nnx.State, *, ema: bool) -> dict[str, Any]:
    """The part of a saved `TrainState` that prediction reads, as shapes on the default device.

    Keys are the `TrainState` field names, so orbax matches them in the checkpoint's tree.
    """
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = lambda tree: jax.tree.map(  # noqa: E731
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
    return {"ema_params" if ema else "params": shapes(params), "rest": shapes(rest)}


def restore_inference_state(state_dir: Path, target: dict[str, Any]) -> dict[str, Any]:
    """Reads only the arrays of `target` from a saved train state (orbax partial restore)."""
    args = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True,
    )
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(Path(state_dir).absolute(), args=args)


def restore_for_inference(path: str | Path) -> Restored:
    """Config, card, graph and inference variables of a workdir or checkpoint folder.

    A damaged checkpoint (a truncated array file, a garbled JSON item) is skipped with a
    one-line warning on stderr for the next one; none intact is one `InputDataError` line.
    """
    candidates = checkpoint_candidates(path)
    reasons: list[str] = []
    ignore_abandoned_reads()
    for checkpoint in candidates:
        try:
            restored = _restore_one(checkpoint)
        except Exception as error:  # noqa: BLE001 - any failure to read it means it is unusable
            if is_out_of_memory(error):
                raise
            reasons.append(damage_reason(error))
            continue
        for damaged, reason in zip(candidates, reasons):  # only when one was intact
            print(f"warning: checkpoint {damaged} is damaged ({reason}); using {checkpoint} instead",
                  file=sys.stderr, flush=True)
        return restored
    if len(candidates) == 1:
        raise InputDataError(candidates[0], "checkpoint", "an intact checkpoint", f"a damaged one ({reasons[0]})")
    raise InputDataError(path, "checkpoints", "at least one intact checkpoint",
                         f"{len(candidates)} damaged ({', '.join(str(c) for c in candidates)}); "
                         f"the first: {reasons[0]}")


def check_normalization(card: DatasetCard, where: Path) -> None:
    """Refuses a card whose normalization `load` could not reproduce, in one line."""
    if card.normalization not in norm_lib.MODES:
        raise InputDataError(where, "dataset_card.normalization", "one of " + ", ".join(norm_lib.MODES),
                             repr(card.normalization))
    for mouse in card.mice:
        if mouse.normalization not in norm_lib.RESOLVED_MODES:
            raise InputDataError(where, f"dataset_card.{mouse.name}.normalization",
                                 "one of " + ", ".join(norm_lib.RESOLVED_MODES), repr(mouse.normalization))
        norm_lib.from_card(mouse)  # per-frame constants present where the mode needs them


def run_folder(checkpoint: Path) -> Path:
    """The workdir holding a checkpoint step folder (WORKDIR/checkpoints/<kind>/<step>): the
    nearest folder above it with the run's full dataset card (else the step folder itself)."""
    checkpoint = Path(checkpoint).absolute()
    return next((folder for folder in checkpoint.parents if (folder / CARD_FILE).is_file()), checkpoint)


def _restore_one(checkpoint: Path) -> Restored:
    meta = read_checkpoint_meta(checkpoint)
    config = ml_collections.ConfigDict(meta["config"])
    card = DatasetCard.from_json(json.dumps(meta["dataset_card"]), run_folder(checkpoint))
    check_normalization(card, checkpoint / "meta")
    if "normalization" not in config.data:  # written before the mode existed: the card's (per neuron)
        config.data.normalization = card.normalization
    abstract = nnx.eval_shape(lambda: build_model(config.model, card, nnx.Rngs(config.get("seed", 0))))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    ema = uses_ema(config)
    restored = restore_inference_state(checkpoint / "state", inference_target(params, rest, ema=ema))
    variables = {"params": restored["ema_params" if ema else "params"], "rest": restored["rest"]}
    return Restored(config, card, graphdef, variables, checkpoint)
