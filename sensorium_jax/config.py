"""Default experiment settings; every file in configs/ starts from these and overrides data.

Configs are data (ml_collections), so any field can be set from the command line with
`--config.section.key=value`.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = data = ml_collections.ConfigDict()
    data.store = ""  # a converted store; empty: the synthetic digital mouse below
    data.synthetic_preset = "small"
    data.synthetic_seed = 0
    data.synthetic_mice = 0  # 0: the preset's number of mice
    data.cache_dir = ""  # empty: $XDG_CACHE_HOME/sensorium_jax or ~/.cache/sensorium_jax
    data.clip_length = 80
    data.clips_per_mouse = 8
    data.mouse_sampling = "all"  # "all": every mouse in every batch; "uniform": mice drawn uniformly
    data.batch_size = 0  # with mouse_sampling="uniform": clips per batch
    data.train_tiers = ("train",)
    data.validation_tier = "oracle"
    data.eval_batch_size = 8
    data.read_threads = 2
    data.prefetch = 2  # batches read ahead (>= read_threads); memory ~ batch bytes x (prefetch + 2)
    data.device_prefetch = 2  # global batches placed on the devices ahead of the step (0: none)

    config.model = ml_collections.ConfigDict()  # filled from the model registry's defaults

    config.optimizer = optimizer = ml_collections.ConfigDict()
    optimizer.name = "adamw"
    optimizer.weight_decay = 0.0
    optimizer.grad_clip_norm = 0.0

    config.schedule = schedule = ml_collections.ConfigDict()
    schedule.name = "plateau"  # plateau | constant | warmup_cosine
    schedule.learning_rate = 5e-3
    schedule.plateau_factor = 0.3
    schedule.plateau_patience = 5
    schedule.max_reductions = 4  # early stopping after this many reductions without progress
    schedule.warmup_steps = 0
    schedule.end_learning_rate = 0.0

    config.train = train = ml_collections.ConfigDict()
    train.steps = 2000
    train.eval_every = 100  # steps between validations ("epochs" for the plateau schedule)
    train.log_every = 10
    train.loss = "poisson"
    train.burn_in = 50  # frames dropped from each trial before scoring
    # Exponential moving average of the parameters (0: none); validation, the best checkpoint's
    # users and `load` then predict with the average.
    train.ema_decay = 0.0
    # CutMix of clips of the same mouse inside the step (probability 0: off).
    train.cutmix = ml_collections.ConfigDict({"probability": 0.0, "alpha": 1.0})
    return config
