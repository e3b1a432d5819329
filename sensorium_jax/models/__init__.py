"""Models: cores, readouts, shifters, assembled models, losses and the registry by name."""

from sensorium_jax.models.registry import build_model, default_model_config, register_model, registered_models
from sensorium_jax.models.losses import align_targets, get_loss, poisson_loss
from sensorium_jax.models.factorized import FactorizedModel, factorized_config

__all__ = [
    "FactorizedModel",
    "align_targets",
    "build_model",
    "default_model_config",
    "factorized_config",
    "get_loss",
    "poisson_loss",
    "register_model",
    "registered_models",
]
