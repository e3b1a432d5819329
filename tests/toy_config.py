"""The toy model (tests/toy_model.py) on the tiny synthetic preset, a few steps:

    PYTHONPATH=tests python train.py --config tests/toy_config.py --workdir runs/toy
"""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config


def get_config():
    config = base_config()
    config.data.synthetic_preset = "tiny"
    config.data.clip_length = 16
    config.data.clips_per_mouse = 2
    config.data.eval_batch_size = 8
    config.model = default_model_config("toy_model")
    config.train.steps = 4
    config.train.eval_every = 2
    config.train.log_every = 2
    config.train.burn_in = 15
    return config
