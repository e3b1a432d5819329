"""DwiseNeuro, first place of SENSORIUM 2023, with its training recipe, at competition scale.

    python train.py --config configs/dwiseneuro.py --workdir runs/dwiseneuro \
        --config.data.store=/path/to/store
    python train.py --config configs/dwiseneuro.py:smoke --workdir runs/dwiseneuro_smoke
    python train.py --config configs/dwiseneuro.py:distill --workdir runs/dwiseneuro_distilled \
        --config.data.store=/path/to/store --config.train.distill.teacher=runs/dwiseneuro

Recipe (SENSORIUM 2023 retrospective, appendix A.1, and the first-place code's basic stage
`true_batch_001`): raw (unnormalised) inputs and targets, predictions divided by the response
std only in the submission; AdamW 2.4e-3, weight decay 0.05; 3 warmup epochs from 0, then
cosine to 2.4e-5 over the last 18; an epoch is 72,000 clips, so 2,250 steps of 32; mice drawn
uniformly per clip; Poisson loss; model EMA 0.999 (validation, checkpoints' users and `load`
predict with the average); CutMix over all input channels (alpha 1, probability 0.5, clips of
the same mouse, the box drawn on the padded 64 x 64 frame); expansion ratio 7. Clips of 32
frames run as two phases of 16 frames at step 2 (every frame predicted); whole trials are
predicted with stride-1 windows averaged (`model.window_inference`; evaluate.py
--window_rule=centred scores the faster rule).

Variant `distill`: the recipe's second stage (`distillation_001`): the same recipe with expansion
ratio 6, every mouse's readout trained on every clip, the other mice's responses predicted by a
first-stage run (`train.distill.teacher`, by default runs/dwiseneuro; with `data.fold=k`, give the
first-stage run of the same fold) and weighted to 0.36 of the loss (sensorium_jax.training.distillation).
The paper: each distilled fold model scores ~0.007 above its teacher, their ensemble about the same.
Both stages on all 7 folds and their ensemble: `python -m sensorium_jax.fold_ensemble` (README).
`distill_smoke`: the smoke recipe distilled from a smoke run (runs/dwiseneuro_smoke).

Variant `smoke`: the same recipe (raw units, uniform mice, warmup + cosine, EMA, CutMix) on the
tiny synthetic preset with a tiny network, for the tests; whole trials in centred windows, the
rule the trainer's validation uses, so evaluate.py reproduces the trainer's score.
"""

import ml_collections

from sensorium_jax.config import base_config
from sensorium_jax.models import default_model_config
from sensorium_jax.recipes import dwiseneuro_distillation

STEPS_PER_EPOCH = 72_000 // 32
VARIANTS = ("", "smoke", "distill", "distill_smoke")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"configs/dwiseneuro.py[:variant] takes one of {VARIANTS}, got {variant!r}")
    config = competition()
    if variant in ("smoke", "distill_smoke"):
        config = smoke(config)
    if variant == "distill":
        config = dwiseneuro_distillation(config, teacher="runs/dwiseneuro", expansion_ratio=6)
    if variant == "distill_smoke":
        config = dwiseneuro_distillation(config, teacher="runs/dwiseneuro_smoke",
                                         expansion_ratio=config.model.blocks.expansion_ratio)
    return config


def competition() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.synthetic_preset = "full"
    config.model = default_model_config("dwiseneuro")
    config.model.blocks.expansion_ratio = 7
    config.model.window_inference = "stride1_mean"
    config.data.clip_length = config.model.clip_length
    config.data.normalization = "none"  # the paper's "removing normalization" step
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
    return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The competition recipe shrunk to the tiny preset and a tiny network."""
    config.data.synthetic_preset = "tiny"
    model = config.model
    model.clip_length = 16
    model.window_inference = "centred"
    model.frame_size = (40, 64)
    model.stem.channels = 8
    model.blocks.channels = (8, 16, 16)
    model.blocks.spatial_strides = (2, 2, 1)
    model.blocks.expansion_ratio = 2
    model.blocks.se_reduce_ratio = 4
    model.cortex.channels = (32, 64)
    model.drop_path_rate = 0.0
    model.cortex.drop_path_rate = 0.0
    model.readout.dropout = 0.1
    config.data.clip_length = model.clip_length
    config.data.batch_size = 8
    config.data.eval_batch_size = 8
    config.schedule.warmup_steps = 30
    # Raw targets learn slower on this budget: validation correlation at step 100 on the tiny
    # preset 0.023 with 5e-3 (0.057 with normalized data), 0.054 with 1.5e-2.
    config.schedule.learning_rate = 1.5e-2
    config.schedule.end_learning_rate = 1.5e-4
    config.train.steps = 300
    config.train.eval_every = 100
    config.train.log_every = 20
    config.train.ema_decay = 0.99
    config.train.burn_in = 15  # the tiny preset scores (and its oracle ceiling) use 15
    return config
