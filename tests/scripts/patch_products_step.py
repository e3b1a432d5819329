"""Two training steps of the smoke config widened to 32 channels in the CPU form, whose
convolutions then run as patch products in loops over chunks of frames, on however many
devices XLA_FLAGS gives; prints the losses and the compiled step's all-gathers as JSON.

    python tests/scripts/patch_products_step.py STORE CONFIGS_FOLDER
"""

import json
import re
import sys
from pathlib import Path

import jax

from sensorium_jax.config import load_config
from sensorium_jax.data.datasets import open_training_store
from sensorium_jax.training.loop import build_training, device_batches
from sensorium_jax.training.mesh import make_data_mesh

store, configs = sys.argv[1], Path(sys.argv[2])
config = load_config(configs / "smoke.py")
config.data.store = store
config.model.kernels = "folded"
config.model.core.channels = (32, 32)
mesh = make_data_mesh()
setup = build_training(config, open_training_store(config.data), mesh)
batches = device_batches(setup.dataset, mesh, config)
batch = next(batches)
hlo = setup.train_step.lower(setup.state, batch).compile().as_text()
gathers = [line.strip()[:160] for line in hlo.splitlines() if re.search(r"\ball-gather(-start)?\(", line)]
state, losses = setup.state, []
for _ in range(2):
    state, metrics = setup.train_step(state, batch)
    losses.append(float(metrics["loss"]))
    batch = next(batches)
print("RESULT " + json.dumps({"devices": jax.device_count(), "losses": losses, "all_gathers": gathers}))
