"""Smoke test of an ensemble trained as one program: two members of the smoke model."""

import pathlib
import runpy

from sensorium_jax.models import default_model_config

SMOKE = runpy.run_path(str(pathlib.Path(__file__).with_name("smoke.py")))


def get_config():
    config = SMOKE["get_config"]()
    member = config.model
    config.model = default_model_config("ensemble")
    config.model.members = 2
    config.model.member = member
    return config
