"""The SENSORIUM 2023 factorized baseline at competition scale (point it at a store).

    python train.py --config configs/factorized_baseline.py --workdir runs/baseline \
        --config.data.store=/path/to/store
"""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config


def get_config():
    config = base_config()
    config.data.synthetic_preset = "full"
    config.data.clip_length = 80
    config.data.clips_per_mouse = 8
    config.data.mouse_sampling = "all"
    config.model = default_model_config("factorized")
    config.optimizer.name = "adamw"
    config.schedule.name = "plateau"
    config.schedule.learning_rate = 5e-3
    config.schedule.plateau_factor = 0.3
    config.schedule.plateau_patience = 5
    config.train.steps = 200_000
    config.train.eval_every = 1000
    return config
