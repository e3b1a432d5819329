"""Smoke test: the tiny synthetic preset and a tiny model; about a minute on one CPU core.

Sized by measurement on the tiny preset (oracle ceiling 0.65): validation correlation goes
from ~0 untrained to 0.25-0.30 (0.39-0.46 of the ceiling, seeds 0-2) in 300 steps. At
learning rate 1e-2 the readout's position network of some mice locks onto a wrong retinotopic
map and stays near 0.05, so the rate stays at the baseline's 5e-3.
"""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config


VARIANTS = ("",)  # get_config takes no variant


def get_config():
    config = base_config()
    config.data.synthetic_preset = "tiny"
    # The synthetic trials open on a gray screen, so across trials the first frames' responses
    # barely vary and per-frame normalization (data.normalization="auto" here) multiplies their
    # targets up to 100x (the 1%-of-mean-std floor); on this budget that halves the score
    # (0.14-0.18 against 0.29 measured), so the quick configs normalize per neuron.
    config.data.normalization = "per_neuron"
    config.data.clip_length = 24
    config.data.clips_per_mouse = 4
    config.data.eval_batch_size = 8
    config.model = default_model_config("factorized")
    config.model.core.channels = (8, 8)
    config.model.core.spatial_kernels = (7, 3)
    config.model.core.temporal_kernels = (5, 3)
    config.model.core.input_pool = 2  # 18 x 32 feature maps: 4x cheaper, twice the RF in pixels
    config.model.core.spatial_padding = "SAME"  # keep RFs at the screen edges readable
    config.schedule.learning_rate = 5e-3
    config.train.steps = 300
    config.train.eval_every = 100
    config.train.log_every = 20
    config.train.burn_in = 15  # the tiny preset scores (and its oracle ceiling) use 15
    return config
