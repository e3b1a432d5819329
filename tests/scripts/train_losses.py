"""Trains the smoke config for a few steps on however many devices XLA_FLAGS gives and
prints the per-step losses as JSON (used to compare 1 and 8 devices).

    python tests/scripts/train_losses.py STORE WORKDIR CONFIGS_FOLDER
"""

import json
import sys
from pathlib import Path

import jax

from sensorium_jax.config import load_config
from sensorium_jax.training.logging_utils import read_metrics
from sensorium_jax.training.loop import train_and_evaluate

store, workdir, configs = sys.argv[1], sys.argv[2], Path(sys.argv[3])
config = load_config(configs / "smoke.py")
config.data.store = store
config.train.steps = 20
config.train.eval_every = 20
config.train.log_every = 1
train_and_evaluate(config, workdir)
losses = [record["loss"] for record in read_metrics(workdir, "train")]
print("RESULT " + json.dumps({"devices": jax.device_count(), "losses": losses}))
