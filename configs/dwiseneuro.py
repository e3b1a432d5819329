"""DwiseNeuro, first place of SENSORIUM 2023, with its training recipe, at competition scale.

    python train.py --config configs/dwiseneuro.py --workdir runs/dwiseneuro \
        --config.data.store=/path/to/store

Recipe (SENSORIUM 2023 retrospective, appendix A.1): AdamW 2.4e-3, weight decay 0.05; 3
warmup epochs from 0, then cosine to 2.4e-5 over the last 18; an epoch is 72,000 clips, so
2,250 steps of 32; mice drawn uniformly per clip; Poisson loss; model EMA 0.999 (validation,
checkpoints' users and `load` predict with the average); CutMix (alpha 1, probability 0.5,
clips of the same mouse). Clips of 32 frames, every 2nd processed; whole trials are predicted
in overlapping windows.
"""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config

STEPS_PER_EPOCH = 72_000 // 32


def get_config():
    config = base_config()
    config.data.synthetic_preset = "full"
    config.model = default_model_config("dwiseneuro")
    config.data.clip_length = config.model.clip_length
    config.data.mouse_sampling = "uniform"
    config.data.batch_size = 32
    config.optimizer.name = "adamw"
    config.optimizer.weight_decay = 0.05
    config.schedule.name = "warmup_cosine"
    config.schedule.learning_rate = 2.4e-3
    config.schedule.warmup_steps = 3 * STEPS_PER_EPOCH
    config.schedule.end_learning_rate = 2.4e-5
    config.train.steps = 21 * STEPS_PER_EPOCH
    config.train.eval_every = STEPS_PER_EPOCH
    config.train.ema_decay = 0.999
    config.train.cutmix.probability = 0.5
    config.train.cutmix.alpha = 1.0
    config.train.burn_in = 50
    return config
