"""Models: cores, readouts, shifters, assembled models, losses and the registry by name."""

from sensorium_jax.models.registry import build_model, default_model_config, register_model, registered_models
from sensorium_jax.models.losses import align_targets, get_loss, poisson_loss
from sensorium_jax.models.factorized import FactorizedModel, factorized_config
from sensorium_jax.models.dwiseneuro import DwiseNeuroModel, dwiseneuro_config
from sensorium_jax.models.registry import count_parameters
from sensorium_jax.models.gru import GRUModel, gru_config

__all__ = [
    "DwiseNeuroModel",
    "count_parameters",
    "dwiseneuro_config",
    "FactorizedModel",
    "GRUModel",
    "align_targets",
    "build_model",
    "default_model_config",
    "factorized_config",
    "get_loss",
    "gru_config",
    "poisson_loss",
    "register_model",
    "registered_models",
]
