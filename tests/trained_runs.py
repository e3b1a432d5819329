"""What the tests of trained models share: the trainer's own predictions of a stored trial,
to compare `load(...).predict` and `evaluate.py` with."""

from __future__ import annotations

from pathlib import Path

import sensorium_jax
from sensorium_jax.data.datasets import open_training_store
from sensorium_jax.training import checkpointing
from sensorium_jax.training.loop import build_training
from sensorium_jax.training.mesh import make_data_mesh
from sensorium_jax.training.steps import make_predict_step
from sensorium_jax.training.validation import predict_tier


def trainer_oracle_batch(config, workdir: Path, tier: str = "oracle", batch_size: int = 4):
    """(`load(workdir)`, the store normalized as the run was, its first mouse, the first batch of
    `tier`, the trainer's predictions of it from the best checkpoint)."""
    model = sensorium_jax.load(workdir)
    store = open_training_store(model.config.data)
    mouse = store.mice[0]
    mesh = make_data_mesh()
    setup = build_training(config, store, mesh)
    checkpoints = checkpointing.Checkpoints(workdir)
    state, _ = checkpoints.restore(checkpointing.BEST, setup.state)
    checkpoints.close()
    predict = make_predict_step(setup.graphdef, mesh)
    batch, trainer = next(predict_tier(
        lambda b: predict(state.inference_params, state.rest, b), store, mouse, tier, batch_size, mesh,
        frames_lost=setup.frames_lost, clip_length=setup.clip_length,
    ))
    return model, store, mouse, batch, trainer
