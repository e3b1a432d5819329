"""The static-image track (SENSORIUM 2022): the CNN baseline and the LN baseline.

    --config configs/static_baseline.py            competition-scale CNN baseline
    --config configs/static_baseline.py:smoke      small CNN, ~2.5 min on 2 busy CPU cores (tests train it)
    --config configs/static_baseline.py:ln         LN baseline at the CNN's data settings
    --config configs/static_baseline.py:ln_smoke   tiny LN

Track: every variant trains the behaviour track (SENSORIUM+: behaviour maps into the core and
the pupil-centre shifter), the 2022 baseline's richer input; `--config.model.track=stimulus`
trains the stimulus-only track (SENSORIUM) with everything else unchanged.

Measured (smoke variants, small static preset seed 0, 3 mice, 300 steps, 2 busy CPU cores;
single-trial correlation on 'validation', oracle ceiling 0.446): CNN behaviour 0.25 (0.56 of
the ceiling), CNN stimulus 0.19; LN behaviour 0.09, LN stimulus 0.05 (32 linear maps, no BatchNorm: 0.003 with
8 batch-normalized maps; 0.06 after 600 steps): a linear map of oscillating filters gives the
readout's position little gradient towards a receptive field, and the synthetic mouse's complex
cells (about half) are out of any linear model's reach.

Data: without `--config.data.store` the synthetic static mouse (`data.synthetic_kind =
"static"`) of the `small` preset (2,000 training images per mouse); a converted SENSORIUM 2022
store is named with `--config.data.store=...`. Static trials are one frame: clip_length 1,
burn_in 0, validation on the repeated "validation" tier.
"""

import ml_collections

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config
from sensorium_jax.recipes import sensorium2023_trainer

VARIANTS = ("", "smoke", "ln", "ln_smoke")


def static_data(config: ml_collections.ConfigDict) -> None:
    """One image per trial, scored from its first (only) frame, validated on 'validation'."""
    config.data.synthetic_kind = "static"
    config.data.synthetic_preset = "small"
    config.data.clip_length = 1
    config.data.validation_tier = "validation"
    config.data.fold_tiers = ("train", "validation")
    config.train.burn_in = 0


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"configs/static_baseline.py variant {variant!r}: "
                         f"expected one of {', '.join(map(repr, VARIANTS))}")
    # The 2022 starter kit trained with the same nnfabrik trainer as the 2023 one: summed and
    # scaled Poisson loss, gradients of every mouse per step, Adam 5e-3, plateau rule, <= 200 epochs.
    config = sensorium2023_trainer(base_config())
    static_data(config)
    config.data.clips_per_mouse = 128  # the 2022 static loaders' batch of images
    config.data.eval_batch_size = 128
    ln = variant.startswith("ln")
    config.model = default_model_config("linear_nonlinear" if ln else "static_baseline")
    if variant.endswith("smoke"):
        smoke(config, ln)
    return config


def smoke(config: ml_collections.ConfigDict, ln: bool) -> None:
    """A CPU-minute model on the small static preset (sizes set by measurement, see the tests):
    every mouse in each batch, the mean loss, a constant rate and a fixed step budget."""
    config.data.normalization = "per_neuron"
    config.data.mouse_sampling = "all"
    config.data.clips_per_mouse = 32
    config.data.eval_batch_size = 64
    config.train.loss_scale = "mean"
    if ln:
        config.model.core.channels = 32
        config.model.core.kernel = 13
        config.model.core.input_pool = 2
    else:
        config.model.core.channels = 16
        config.model.core.layers = 3
        config.model.core.hidden_kernel = 5
        config.model.core.input_pool = 2
    config.schedule.name = "constant"
    config.schedule.learning_rate = 1e-2
    config.schedule.restore_best = False
    config.train.max_epochs = 0
    config.train.eval_every_epochs = 0
    config.train.steps = 300
    config.train.eval_every = 100
    config.train.log_every = 20
