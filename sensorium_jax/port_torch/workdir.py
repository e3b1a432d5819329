"""Writing an imported model as a workdir that `load`, `evaluate.py` and training read like a
trained run's: `config.json`, `dataset_card.json` and one checkpoint in `checkpoints/best`
(step 0, no validation score) holding a fresh train state around the imported parameters.

The optimizer state is the configured optimizer's initial one, so `train.py` on the workdir
fine-tunes from the imported weights; an EMA, where the config keeps one, starts at them too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ml_collections
from flax import nnx

from sensorium_jax.data.card import CARD_FILE, DatasetCard
from sensorium_jax.errors import InputDataError
from sensorium_jax.training.checkpointing import BEST, Checkpoints
from sensorium_jax.training.schedules import PlateauState, learning_rate_schedule, make_optimizer
from sensorium_jax.training.state import create_train_state, uses_ema
from sensorium_jax.training.workdir import CONFIG_FILE, has_checkpoint

IMPORT_FILE = "imported_from.json"
IMPORT_STEP = 0


def check_new_workdir(workdir: str | Path) -> Path:
    """The absolute workdir, refused if it already holds checkpoints (nothing is overwritten)."""
    workdir = Path(workdir).expanduser().absolute()
    if has_checkpoint(workdir):
        raise InputDataError(workdir, "--out", "a new or empty workdir", "it holds checkpoints already")
    return workdir


def write_workdir(workdir: str | Path, config: ml_collections.ConfigDict, card: DatasetCard, model: nnx.Module,
                  provenance: dict) -> Path:
    """Saves `model` as the best checkpoint of a new workdir; returns the step folder."""
    workdir = check_new_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tx = make_optimizer(config.optimizer, learning_rate_schedule(config.schedule, int(config.train.steps)))
    _, state = create_train_state(model, tx, ema=uses_ema(config))
    config_json = json.loads(config.to_json_best_effort())
    meta = {
        "plateau": dataclasses.asdict(PlateauState()),
        "config": config_json,
        "dataset_card": json.loads(card.to_json(frames_file=CARD_FILE)),
        "model": config.model.name,
        "imported_from": provenance,
    }
    checkpoints = Checkpoints(workdir)
    try:
        checkpoints.save(BEST, IMPORT_STEP, state, None, meta, None)
        checkpoints.wait()
    finally:
        checkpoints.close()
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
    (workdir / CARD_FILE).write_text(card.to_json())
    (workdir / IMPORT_FILE).write_text(json.dumps(provenance, indent=2))
    return workdir / "checkpoints" / BEST / str(IMPORT_STEP)
