"""The SENSORIUM 2023 ensembled baseline: the factorized baseline from 14 seeds, trained as
one program (members stacked along a leading axis; prediction = the members' mean, each member
with its own best parameters).

Member k is the separate run of the member config with seed `seed + k` (seed 0: member k is
the run with seed k): its initialisation, batches, augmentations, plateau schedule, early stop
and best parameters are that run's (`sensorium_jax.models.ensemble`, `training.loop`).

    python train.py --config configs/ensemble_baseline.py --workdir runs/ensemble \
        --config.data.store=/path/to/store [--config.model.members=4]
    python train.py --config configs/ensemble_baseline.py:smoke --workdir runs/ensemble_smoke

Variant `smoke`: two members of the smoke model (`configs/smoke.py`) on the tiny preset.
"""

from pathlib import Path

import ml_collections

from sensorium_jax.config import load_config
from sensorium_jax.models import default_model_config

HERE = Path(__file__).resolve().parent
VARIANTS = {"": ("factorized_baseline.py", 14), "smoke": ("smoke.py", 2)}


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"configs/ensemble_baseline.py[:variant] takes no variant or 'smoke', got {variant!r}")
    member_file, members = VARIANTS[variant]
    config = load_config(HERE / member_file)
    member = config.model
    config.model = default_model_config("ensemble")
    config.model.members = members
    config.model.member = member
    return config
