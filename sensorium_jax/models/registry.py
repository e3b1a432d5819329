"""Models by name: `build_model(config, card, rngs)` picks the builder `config.name` names.

New models plug in with `@register_model("name", default_config=fn)` on a function
`(model_config, card, rngs) -> nnx.Module`; the trainer never changes. `default_model_config`
gives a fresh copy of a model's default configuration (configs start from it).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard

Builder = Callable[[ml_collections.ConfigDict, DatasetCard, nnx.Rngs], nnx.Module]

_BUILDERS: dict[str, Builder] = {}
_DEFAULTS: dict[str, Callable[[], ml_collections.ConfigDict]] = {}
# Modules that register the built-in models when imported.
_BUILTIN_MODULES = (
    "sensorium_jax.models.factorized",
    "sensorium_jax.models.ensemble",
    "sensorium_jax.models.gru",
    "sensorium_jax.models.dwiseneuro",
)


def register_model(
    name: str, default_config: Callable[[], ml_collections.ConfigDict] | None = None
) -> Callable[[Builder], Builder]:
    """Decorator registering a model builder (and optionally its default config) under `name`."""

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        if default_config is not None:
            _DEFAULTS[name] = default_config
        return builder

    return decorate


def default_model_config(name: str) -> ml_collections.ConfigDict:
    """A fresh copy of the default configuration of model `name` (its `name` field set)."""
    _load_builtins()
    if name not in _DEFAULTS:
        raise KeyError(f"no default config for model {name!r}; known: {', '.join(sorted(_DEFAULTS))}")
    config = _DEFAULTS[name]()
    config.name = name
    return config


def registered_models() -> tuple[str, ...]:
    _load_builtins()
    return tuple(sorted(_BUILDERS))


def build_model(
    model_config: ml_collections.ConfigDict, card: DatasetCard, rngs: nnx.Rngs
) -> nnx.Module:
    """The model `model_config.name` for the mice of `card`."""
    _load_builtins()
    name = model_config.name
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name](model_config, card, rngs)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def count_parameters(model: nnx.Module) -> int:
    """Number of trainable scalars (`nnx.Param` entries) of `model`; works on an abstract model
    from `nnx.eval_shape` too (nothing is allocated)."""
    return sum(int(math.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
