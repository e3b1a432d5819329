"""The default: a small factorized model on the `small` synthetic preset (~10 min on 2 CPU cores)."""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config


def get_config():
    config = base_config()
    config.data.synthetic_preset = "small"
    config.data.clip_length = 40
    config.data.clips_per_mouse = 8
    config.model = default_model_config("factorized")
    config.model.core.channels = (16, 16, 16)
    config.model.core.spatial_kernels = (9, 5, 5)
    config.model.core.temporal_kernels = (7, 3, 3)
    config.schedule.learning_rate = 5e-3
    config.train.steps = 1500
    config.train.eval_every = 100
    config.train.log_every = 10
    return config
