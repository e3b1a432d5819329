"""The SENSORIUM 2023 ensembled baseline: the factorized baseline from 14 seeds, trained as
one program (members stacked along a leading axis; prediction = the members' mean).

    python train.py --config configs/ensemble_baseline.py --workdir runs/ensemble \
        --config.data.store=/path/to/store [--config.model.members=4]
"""

import pathlib
import runpy

from sensorium_jax.models import default_model_config

BASELINE = runpy.run_path(str(pathlib.Path(__file__).with_name("factorized_baseline.py")))


def get_config():
    config = BASELINE["get_config"]()
    member = config.model
    config.model = default_model_config("ensemble")
    config.model.members = 14
    config.model.member = member
    return config
