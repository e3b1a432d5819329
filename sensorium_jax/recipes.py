"""Training recipes the configs share, as functions that fill a config's data/train/schedule.

A recipe is the published trainer of a model family, written once so that every config that
follows it (the factorized and GRU baselines, their ensembles) stays the same recipe.
"""

from __future__ import annotations

import ml_collections


def sensorium2023_trainer(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The SENSORIUM 2023 starter kit's trainer: 8 clips of 80 frames of every mouse per step,
    its summed and scaled Poisson loss, AdamW 5e-3 and its plateau rule. Returns `config`."""
    config.data.synthetic_preset = "full"
    config.data.clip_length = 80
    config.data.clips_per_mouse = 8
    # One optimizer step per round of one batch of every mouse, BatchNorm statistics per mouse.
    config.data.mouse_sampling = "round"
    # Poisson summed over entries, each mouse's batch times sqrt(its trials / its clips in it).
    config.train.loss_scale = "reference"
    config.optimizer.name = "adamw"
    config.schedule.name = "plateau"
    config.schedule.learning_rate = 5e-3
    config.schedule.plateau_factor = 0.3
    config.schedule.plateau_patience = 5
    # Restore the best parameters after 5 epochs without progress, stop at the 4th time, the
    # rate x0.3 (floor 1e-4) after 6; at most 200 epochs, validating after each.
    config.schedule.plateau_rule = "reference"
    config.schedule.plateau_threshold = 1e-6
    config.schedule.min_learning_rate = 1e-4
    config.schedule.restore_best = True
    config.schedule.max_reductions = 4
    config.train.max_epochs = 200
    config.train.eval_every_epochs = 1
    config.train.steps = 200_000  # bounds only: the epochs above decide
    config.train.eval_every = 1000
    return config


ZOO_SMALL_STEPS = 400  # the README's small-preset table: every model trains this many steps


def zoo_small_budget(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The small-preset table's budget, the same for every model: 400 steps of 32-frame clips of
    the `small` synthetic preset (12 per step), validated every 100 steps. Returns `config`."""
    config.data.synthetic_preset = "small"
    config.data.clip_length = 32
    config.train.max_epochs = 0
    config.train.eval_every_epochs = 0
    config.train.steps = ZOO_SMALL_STEPS
    config.train.eval_every = 100
    config.train.log_every = 20
    return config


DWISENEURO_DISTILL_RATIO = 0.36  # the predicted entries' share of the loss's weight


def dwiseneuro_distillation(config: ml_collections.ConfigDict, teacher: str,
                            expansion_ratio: int) -> ml_collections.ConfigDict:
    """DwiseNeuro's second stage: the same recipe, every readout also trained on the
    predictions of `teacher` (a first-stage workdir) for every mouse. Returns `config`."""
    config.model.blocks.expansion_ratio = expansion_ratio
    config.train.distill.teacher = teacher
    config.train.distill.ratio = DWISENEURO_DISTILL_RATIO
    return config
