"""Smoke test of DwiseNeuro and its recipe (uniform mice, warmup + cosine, EMA, CutMix) on the
tiny synthetic preset with a tiny network."""

import pathlib
import runpy

COMPETITION = runpy.run_path(str(pathlib.Path(__file__).with_name("dwiseneuro.py")))


def get_config():
    config = COMPETITION["get_config"]()
    config.data.synthetic_preset = "tiny"
    model = config.model
    model.clip_length = 16
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
    config.schedule.learning_rate = 5e-3
    config.schedule.end_learning_rate = 5e-5
    config.train.steps = 300
    config.train.eval_every = 100
    config.train.log_every = 20
    config.train.ema_decay = 0.99
    config.train.burn_in = 15  # the tiny preset scores (and its oracle ceiling) use 15
    return config
