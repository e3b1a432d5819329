"""Trains the smoke config for a few steps on however many devices XLA_FLAGS gives and
prints the per-step losses as JSON (used to compare 1 and 8 devices)."""

import json
import sys

import jax

sys.path.insert(0, sys.argv[3])
import smoke  # noqa: E402

from sensorium_jax.training.logging_utils import read_metrics  # noqa: E402
from sensorium_jax.training.loop import train_and_evaluate  # noqa: E402

store, workdir = sys.argv[1], sys.argv[2]
config = smoke.get_config()
config.data.store = store
config.train.steps = 20
config.train.eval_every = 20
config.train.log_every = 1
train_and_evaluate(config, workdir)
losses = [record["loss"] for record in read_metrics(workdir, "train")]
print("RESULT " + json.dumps({"devices": jax.device_count(), "losses": losses}))
