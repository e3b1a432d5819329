"""Smoke test: the tiny synthetic preset and a tiny model; well under a minute on one CPU."""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config


def get_config():
    config = base_config()
    config.data.synthetic_preset = "tiny"
    config.data.clip_length = 24
    config.data.clips_per_mouse = 4
    config.data.eval_batch_size = 8
    config.model = default_model_config("factorized")
    config.model.core.channels = (8, 8)
    config.model.core.spatial_kernels = (7, 3)
    config.model.core.temporal_kernels = (5, 3)
    config.schedule.learning_rate = 1e-2
    config.train.steps = 60
    config.train.eval_every = 20
    config.train.log_every = 10
    config.train.burn_in = 15  # the tiny preset scores (and its oracle ceiling) use 15
    return config
