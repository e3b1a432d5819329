"""The SENSORIUM 2023 factorized baseline at competition scale (point it at a store).

    python train.py --config configs/factorized_baseline.py --workdir runs/baseline \
        --config.data.store=/path/to/store
"""

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config
from sensorium_jax.recipes import sensorium2023_trainer


VARIANTS = ("",)  # get_config takes no variant


def get_config():
    config = sensorium2023_trainer(base_config())
    config.model = default_model_config("factorized")
    # The reference's regularisation (its defaults here, spelled out): Laplace smoothness of
    # the first spatial filters x10, temporal smoothness x0.01, no readout L1; BatchNorm
    # momentum 0.7 in torch's convention; Xavier-normal convolutions.
    config.model.core.gamma_input_spatial = 10.0
    config.model.core.gamma_input_temporal = 0.01
    config.model.readout.gamma_readout = 0.0
    config.model.readout.init_sigma = 1.0  # the reference draws the full sigma in [-1, 1]
    config.model.core.bn_momentum = 0.3
    config.model.core.conv_init = "xavier_normal"
    return config
