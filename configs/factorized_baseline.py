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
    # One optimizer step per round of one batch of every mouse, BatchNorm statistics per mouse.
    config.data.mouse_sampling = "round"
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
    # The reference trainer's loss: Poisson summed over entries, each mouse's batch times
    # sqrt(its trials / its clips in the batch).
    config.train.loss_scale = "reference"
    config.optimizer.name = "adamw"
    config.schedule.name = "plateau"
    config.schedule.learning_rate = 5e-3
    config.schedule.plateau_factor = 0.3
    config.schedule.plateau_patience = 5
    # The reference trainer: restore the best parameters after 5 epochs without progress, stop
    # at the 4th time, the rate x0.3 (floor 1e-4) after 6; at most 200 epochs, validating each.
    config.schedule.plateau_rule = "reference"
    config.schedule.plateau_threshold = 1e-6
    config.schedule.min_learning_rate = 1e-4
    config.schedule.restore_best = True
    config.schedule.max_reductions = 4
    config.train.max_epochs = 200
    config.train.eval_every_epochs = 1
    config.train.steps = 200_000
    config.train.eval_every = 1000
    return config
