"""Models: the contract (`base.Model`), the zoo found by name, shared building blocks, losses.

Model modules are imported when a config names them (`build_model`), not here.
"""

from sensorium_jax.models.base import Model, ReadoutPositions
from sensorium_jax.models.losses import align_targets, get_loss, poisson_loss
from sensorium_jax.models.registry import build_model, count_parameters, default_model_config, registered_models

__all__ = [
    "Model",
    "ReadoutPositions",
    "align_targets",
    "build_model",
    "count_parameters",
    "default_model_config",
    "get_loss",
    "poisson_loss",
    "registered_models",
]
