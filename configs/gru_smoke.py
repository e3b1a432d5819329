"""Smoke test of the GRU baseline: the tiny synthetic preset and a tiny GRU model (~3 min on
2 busy CPU cores).

Measured on the tiny preset (oracle ceiling 0.65): validation correlation goes from ~0
untrained (0.026, 0.002) to 0.15-0.18 at step 100, 0.20-0.22 at step 200 and 0.24-0.25 at
step 300 (seeds 0, 1), close to the factorized smoke config. The learning rate stays at the
baselines' 5e-3 (see configs/smoke.py for why not 1e-2).
"""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config


def get_config():
    config = base_config()
    config.data.synthetic_preset = "tiny"
    config.data.clip_length = 24
    config.data.clips_per_mouse = 4
    config.data.eval_batch_size = 8
    config.model = default_model_config("gru")
    config.model.core.channels = (8, 8)
    config.model.core.input_kernel = 7
    config.model.core.hidden_kernel = 3
    config.model.core.input_pool = 2  # 18 x 32 feature maps
    config.model.gru.channels = 8
    config.model.gru.input_kernel = 3
    config.model.gru.recurrent_kernel = 3
    config.schedule.learning_rate = 5e-3
    config.train.steps = 300
    config.train.eval_every = 100
    config.train.log_every = 20
    config.train.burn_in = 15  # the tiny preset scores (and its oracle ceiling) use 15
    return config
