"""The default: a small factorized model on the `small` synthetic preset (~12 min on 2 CPU cores).

Sized by measurement on 2 CPU cores (oracle ceiling 0.50 single-trial): 8/8 channels reach
0.28 (0.57 of the ceiling) in 1,500 steps and stop there; 16/16 channels with 7-frame then
5-frame temporal kernels reach 0.29 by step 600 at ~16 clips/s. Input pooling by 2 and SAME
padding keep the CPU cost down and the screen edges readable; the learning rate stays at the
baseline's 5e-3 (1e-2 lets some mice's readout positions lock onto a wrong map).
"""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config


VARIANTS = ("",)  # get_config takes no variant


def get_config():
    config = base_config()
    config.data.synthetic_preset = "small"
    # The synthetic trials open on a gray screen, so across trials the first frames' responses
    # barely vary and per-frame normalization (data.normalization="auto" here) multiplies their
    # targets up to 100x (the 1%-of-mean-std floor); on this budget that halves the score
    # (0.14-0.18 against 0.29 measured), so the quick configs normalize per neuron.
    config.data.normalization = "per_neuron"
    config.data.clip_length = 32
    config.data.clips_per_mouse = 4
    config.model = default_model_config("factorized")
    config.model.core.channels = (16, 16)
    config.model.core.spatial_kernels = (7, 5)
    config.model.core.temporal_kernels = (7, 5)
    config.model.core.input_pool = 2
    config.model.core.spatial_padding = "SAME"
    config.schedule.name = "warmup_cosine"
    config.schedule.learning_rate = 5e-3
    config.schedule.warmup_steps = 50
    config.schedule.end_learning_rate = 5e-4
    config.train.steps = 900
    config.train.eval_every = 300
    config.train.log_every = 20
    return config
