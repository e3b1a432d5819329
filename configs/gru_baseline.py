"""The SENSORIUM 2023 GRU baseline at competition scale (point it at a store).

    python train.py --config configs/gru_baseline.py --workdir runs/gru \
        --config.data.store=/path/to/store
    python train.py --config configs/gru_baseline.py:smoke --workdir runs/gru_smoke

Training as for the factorized baseline: 8 clips of 80 frames per mouse in every batch (40
clips for the competition's 5 training mice), AdamW at 5e-3 with the plateau schedule. The GRU
predicts every frame, so scoring drops only the burn-in frames.

Variant `smoke`: the tiny synthetic preset and a tiny GRU model (~3 min on 2 busy CPU cores).
Measured on the tiny preset (oracle ceiling 0.65): validation correlation goes from ~0
untrained (0.026, 0.002) to 0.15-0.18 at step 100, 0.20-0.22 at step 200 and 0.24-0.25 at
step 300 (seeds 0, 1), close to the factorized smoke config. The learning rate stays at the
baselines' 5e-3 (see configs/smoke.py for why not 1e-2).
"""

import ml_collections

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config

VARIANTS = ("", "smoke")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"configs/gru_baseline.py[:variant] takes no variant or 'smoke', got {variant!r}")
    return smoke() if variant == "smoke" else competition()


def competition() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.synthetic_preset = "full"
    config.data.clip_length = 80
    config.data.clips_per_mouse = 8
    config.data.mouse_sampling = "all"
    config.model = default_model_config("gru")
    config.optimizer.name = "adamw"
    config.schedule.name = "plateau"
    config.schedule.learning_rate = 5e-3
    config.schedule.plateau_factor = 0.3
    config.schedule.plateau_patience = 5
    config.train.steps = 200_000
    config.train.eval_every = 1000
    return config


def smoke() -> ml_collections.ConfigDict:
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
